"""Short test clips made with the ffmpeg executable from real photos (tests/data/photos/faces).

A photo is panned and zoomed over time (so faces move and detections jitter
as on real footage), with a sine-wave audio track. The executable comes from
PATH or from imageio-ffmpeg (in the test extra); tests that need it are
skipped with a reason when neither is there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers import DATA

PHOTOS = DATA / "photos" / "faces"
SRT = "1\n00:00:00,000 --> 00:00:00,800\nhello\n\n2\n00:00:00,900 --> 00:00:01,500\nworld\n"


def ffmpeg_exe() -> str | None:
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    exe = ffmpeg_exe()
    assert exe, "no ffmpeg executable"
    subprocess.run([exe, "-v", "error", "-y", *args], check=True, capture_output=True)


def make_clip(path: Path, *, photo: str = "astronaut.png", seconds: float = 2.0, fps: int = 10,
              size: tuple[int, int] = (160, 120), vfr: bool = False, rotation: int = 0,
              audio: str | None = "aac", subtitles: bool = False, crf: int = 20, speed: float = 1.0) -> Path:
    """A pan/zoom over ``photo``: ``size`` pixels, ``fps`` frames a second (before dropping
    frames for ``vfr``), a 440 Hz sine track encoded with ``audio`` (None: no audio).
    ``speed`` scales the motion (a long clip at ``speed`` 1 zooms until the face fills the frame)."""
    width, height = size
    big = 2 * width
    t = f"{speed:g}*t"
    # zoom in slowly while panning right and down; the face stays in view
    video = (f"scale=w='{big}+{width // 4}*{t}':h=-2:eval=frame,"
             f"crop={width}:{height}:x='{width // 4}+{width // 8}*{t}':y='{height // 4}+{height // 10}*{t}'")
    if vfr:  # drop every 3rd and 4th of each 5 frames at times: irregular intervals
        video += ",select='not(between(mod(n\\,7)\\,2\\,3))',setpts=PTS"
    args = ["-loop", "1", "-framerate", str(fps), "-t", str(seconds), "-i", str(PHOTOS / photo)]
    if audio:
        args += ["-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440:sample_rate=48000"]
    if subtitles:
        srt = path.with_suffix(".srt")
        srt.write_text(SRT)
        args += ["-i", str(srt)]
    args += ["-vf", video + ",format=yuv420p", "-c:v", "libx264", "-crf", str(crf), "-preset", "veryfast"]
    if vfr:
        args += ["-fps_mode", "vfr"]
    args += ["-map", "0:v"]
    if audio:
        args += ["-map", "1:a", "-c:a", audio]
    if subtitles:
        args += ["-map", f"{2 if audio else 1}:s", "-c:s", "mov_text" if path.suffix == ".mp4" else "srt"]
    tmp = path.with_name("_pre_" + path.name) if rotation else path
    ffmpeg(*args, str(tmp))
    if rotation:
        ffmpeg("-display_rotation", str(rotation), "-i", str(tmp), "-map", "0", "-c", "copy", str(path))
        tmp.unlink()
    return path


def frame_times(path: Path) -> list[float]:
    """Presentation times (s) of every video frame, in order."""
    import av

    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0)]


def frames_rgb(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def audio_samples(path: Path):
    """All audio samples of the first audio stream (float, channels x n) and its duration (s)."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0))
    return data


def audio_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]
