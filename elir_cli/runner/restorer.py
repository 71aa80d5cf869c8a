"""The public session object: ``from elir_cli import Restorer``.

Load once, then restore as often as needed::

    from elir_cli import Restorer

    restorer = Restorer(task="bfr", seed=1)      # the model, detector and precision, once
    result = restorer.restore("old.jpg")          # a path, bytes, a PIL image or an array
    result.image.save("old_restored.png")
    restorer.restore("other.jpg", fidelity=0.5)   # per-image options, models shared
    restorer.restore_file("old.jpg", "out.jpg")   # with the CLI's format rules and notes
    restorer.restore_video("clip.mp4", "clip_restored.mp4")

Its keyword options are the settings' (:class:`~elir_cli.pipeline.settings.RestoreSettings`),
the ones ``elir restore`` takes as flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from elir_cli.pipeline.restorer import PhotoRestorer

from .videos import Progress, is_video, restore_one, video_output


class Restorer(PhotoRestorer):
    """Restores photos and videos with one loaded model, detector and runtime.

    ``Restorer(task="bfr", seed=1, ...)`` or ``Restorer(settings)``; see
    :class:`~elir_cli.pipeline.restorer.PhotoRestorer` for the photo methods
    (:meth:`restore`, :meth:`restore_array`, :meth:`restore_file`). The model
    loads on first use, or at :meth:`prepare`.
    """

    def restore_video(self, src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", *, codec: str = "h264",
                      crf: int | None = None, preset: str | None = None, tracking: bool = True,
                      on_progress: Progress | None = None) -> Any:
        """Restore the video ``src`` into ``dst`` (container from its name; sound kept; resumable).

        Returns the :class:`~elir_cli.video.stream.VideoRecord`; raises
        :class:`~elir_cli.errors.ElirError` on failure. ``on_progress(done,
        total, fps)`` is called as frames finish.
        """
        from elir_cli.video.stream import VideoOptions, restore_video

        options = VideoOptions(codec=codec, crf=crf, preset=preset, tracking=tracking)
        return restore_video(src, dst, files=self, options=options, on_progress=on_progress)

    def restore_path(self, src: "str | os.PathLike[str]", dst: "str | os.PathLike[str] | None" = None, *,
                     video_options: Any = None, on_progress: Progress | None = None) -> Any:
        """Restore the file ``src``, a photo or a video (by its content), into ``dst``.

        ``dst`` None: next to ``src`` with the settings' ``suffix``. Returns
        the record (a failure is a record with ``status="failed"``).
        """
        from elir_cli.pipeline.files import output_name_for
        from elir_cli.video.stream import VideoOptions

        path = Path(src)
        name = output_name_for(path, out=None if dst is None else str(dst), suffix=self.settings.suffix, many=False)
        if is_video(path):
            return restore_one(path, video_output(path, name.path, name.exact), self,
                               video_options or VideoOptions(), on_progress=on_progress)
        record, _ = self.restore_file(path, name)
        return record

