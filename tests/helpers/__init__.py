"""What the tests share, and nothing that pytest collects: no test modules live here.

- ``cli_helpers``: run the real ``elir`` in a process of its own (``run_elir``), tiny weights, the
  one-line error check.
- ``forkserver``: the warm server that forks those ``elir`` processes (0.8 s a run instead of 2.5 s).
- ``serve_helpers``: ``elir serve`` on a free loopback port, and small HTTP helpers.
- ``hub_server``, ``hubtools``: local stand-ins for the Hugging Face Hub and the authors'
  release host; tiny models under the real tasks' file names.
- ``tiny``, ``goldens``, ``reference_elir``: tiny random ELIRs, the authors' golden
  checkpoints rebuilt from ``tests/data/elir-format``, an independent functional forward.
- ``facephotos``, ``videoclips``: photos and collages with known faces; short clips made with ffmpeg.
- ``tunephotos``: the real portraits' corners, the ``elir tune`` tests' training photos.
- ``drifting``: plug-in face restorers that drift on purpose (another person's face blended in), so
  that the faithfulness guard's answer is known.
- ``spandrel_zoo``: a small state dict of every architecture spandrel detects (needs spandrel,
  the ``bench`` extra), for detection tests.
- ``torch_threads``: an autouse fixture (one torch thread) for the video modules.
- ``video_worker``: a video restore in a process of its own (``python -m tests.helpers.video_worker``).
- ``waiting``: ``wait_until`` and ``read_line``, to wait on a condition or a process's output
  instead of sleeping; ``ManualClock``, for code that takes a clock.

The test data stay in ``tests/data`` (:data:`DATA`).
"""

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
