"""Restore a video in a process of its own, with a plug-in restorer (for memory and kill tests).

    PYTHONPATH=REPO python -m tests.helpers.video_worker SRC DST [--segment S] [--hold-after N]
        [--no-tracking] [--aligned] [--crf N]

Prints the record as JSON, plus the process's peak RSS (``max_rss_kb``) and its RSS just
before the run, with the libraries imported (``start_rss_kb``): the run's own growth is
the difference; ``segment_peaks_kb``: the peak RSS when each segment was finished.

``--hold-after N``: once N segments are finished and the first frame of the next one is
written, print :data:`HELD` and wait, mid-segment, for the test to kill the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading

HELD = "held"


def pattern_restorer():  # type: ignore[no-untyped-def]
    """A stand-in restorer whose output carries a texture fixed to the crop's grid, as a
    generative restorer's does: jitter in the alignment moves it, so it flickers."""
    import torch

    def restore(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        ramp = torch.arange(size, dtype=x.dtype, device=x.device)
        texture = 0.5 + 0.5 * torch.sin(ramp[None, :] * 0.9) * torch.sin(ramp[:, None] * 0.7)  # (S,S)
        return (0.7 * x + 0.3 * texture).clamp(0.0, 1.0)

    return restore


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hold_mid_segment(after: int, finished: list[int]) -> None:
    """Once ``after`` segments are finished (an entry each in ``finished``), the encoder writes
    the first frame of the next one, prints HELD and waits for the test to kill the process."""
    from elir_cli.video.mux import SegmentWriter

    write = SegmentWriter.write

    def write_then_hold(writer, rgb, pts):  # type: ignore[no-untyped-def]
        write(writer, rgb, pts)
        if len(finished) >= after:
            print(HELD, flush=True)
            threading.Event().wait()  # never set: the test kills the process here

    SegmentWriter.write = write_then_hold  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--segment", type=float, default=10.0)
    parser.add_argument("--hold-after", type=int, default=None, metavar="N")
    parser.add_argument("--no-tracking", action="store_true")
    parser.add_argument("--aligned", action="store_true")
    parser.add_argument("--crf", type=int, default=None)
    args = parser.parse_args()
    from elir_cli.pipeline.settings import RestoreSettings
    from elir_cli.video.stream import VideoOptions, restore_video

    import av  # noqa: F401 - imported before start_rss_kb is taken, as are torch and cv2
    import cv2  # noqa: F401
    import torch  # noqa: F401

    from elir_cli.video.segments import Parts

    start_rss_kb = _rss_kb()
    segment_peaks: list[int] = []
    save = Parts.save

    def save_and_note(parts, manifest):  # type: ignore[no-untyped-def]
        save(parts, manifest)
        segment_peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    Parts.save = save_and_note  # type: ignore[method-assign]
    if args.hold_after is not None:
        hold_mid_segment(args.hold_after, segment_peaks)
    settings = RestoreSettings(task="denoising", seed=0, aligned=args.aligned)
    record = restore_video(args.src, args.dst, settings=settings, restorer=pattern_restorer(),
                           options=VideoOptions(segment_seconds=args.segment, tracking=not args.no_tracking,
                                                crf=args.crf))
    data = record.to_json()
    data["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data["start_rss_kb"] = start_rss_kb
    data["segment_peaks_kb"] = segment_peaks
    print(json.dumps(data))


if __name__ == "__main__":
    main()
