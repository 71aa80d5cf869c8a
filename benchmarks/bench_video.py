"""Video benchmark: speed at 720p, the time outside the model, peak memory vs length, flicker.

Parts (each can be skipped with its option set to 0):

- ``--frames`` (default 24): a 1280x720 pan/zoom clip over a real portrait (one
  face), restored with bfr by a full-size ELIR with random weights (the
  task's real configuration; random weights cost the same time as trained
  ones), ``--device auto``, ``--precision`` (default auto: bf16 on CPUs with
  AMX/AVX512-BF16 once calibration passes; the precision used is printed).
  The model is loaded before the clock starts. Reports fps and the share of
  the stages' wall time not spent in the model, with its parts: detection
  (full frames and crops), tracking, the rest of the restore stage
  (alignment, paste, conversions), the wait for the first decoded frame, the
  encoder's flush after the last frame (x264 holds its lookahead's frames
  until then: paid once per video, so a share that shrinks with its length),
  other queue waits, and the CPU seconds of the decode and encode threads (they run beside the
  model, so their time shows up inside the model's wall time on a busy
  machine: the "bound" share adds them, an upper bound). Then the same
  per-frame work and one model call on one torch thread each, interleaved
  (:func:`equal_threads`): a view of the share that the machine's load
  does not flatter.
- ``--memory-seconds`` (default 10, 40 and 80; 0 or none skips): 1920x1080 clips
  of those lengths at 5 fps, each restored in a fresh process (real detection
  and tracking, a cheap stand-in restorer so that the long clip stays quick);
  peak RSS of each, the RSS before the run and the peak as each 10 s segment
  was finished. The shortest default is 10 s (50 frames) because x264 holds
  ~45 frames of lookahead (~7 MB each at 1080p): a clip of fewer frames peaks
  lower whatever its length (at 25 fps that is under 2 s). Every clip pans and
  zooms as far (:data:`MOTION_SECONDS`), whatever its length.
- ``--flicker`` (``--no-flicker`` skips; ~5 min on a loaded machine): a
  320x240 clip with sensor noise, restored by a tiny random ELIR (real noise
  path) per frame without tracking and with tracking; the flicker measure
  (:mod:`elir_cli.video.flicker`) of the input, untracked and tracked
  outputs, over the input's face boxes.

Quick configuration (720p, 24 frames, auto precision; ~40 s idle):

    python benchmarks/bench_video.py --frames 24 --memory-seconds 0 --no-flicker

Everything: ``python benchmarks/bench_video.py --out benchmarks/results/video.json``.
Needs PyAV and an ffmpeg executable (imageio-ffmpeg) to make the clips.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout: elir_cli and tests.helpers

from tests.helpers.videoclips import ffmpeg, make_clip  # noqa: E402

WORKER = [sys.executable, "-m", "tests.helpers.video_worker"]  # with the checkout on PYTHONPATH
MODEL_SHARE_TARGET = 0.90
MEMORY_TARGET_MB = 3 * 1024


# A clip of any length pans and zooms as far as make_clip's motion goes in this
# many seconds: the 720p face grows from 430 to 570 px wide, one face on every
# frame (with 4.8 s the last frames of a clip came so close that RetinaFace
# also found a second, overlapping face on a third of the frames).
MOTION_SECONDS = 2.4


def clip(path: Path, size: tuple[int, int], seconds: float, fps: int, *, noise: int = 0) -> Path:
    made = make_clip(path.with_name("_" + path.name), photo="astronaut.png", seconds=seconds, fps=fps, size=size,
                     speed=min(1.0, MOTION_SECONDS / seconds))
    if noise:
        ffmpeg("-i", str(made), "-vf", f"noise=alls={noise}:allf=t", "-c:v", "libx264", "-crf", "18",
               "-c:a", "copy", str(path))
    else:
        made.rename(path)
    return path


def speed(folder: Path, frames: int, precision: str, device: str) -> dict:
    import resource

    import torch

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings
    from elir_cli.registry.tasks import get_task
    from elir_cli.video.stream import VideoOptions, restore_video

    torch.manual_seed(0)
    spec = get_task("bfr")
    weights = save_safetensors(folder / "bfr_random.safetensors", ElirModel(spec.model).state_dict(), spec.model,
                               task="bfr")
    fps = 5
    src = clip(folder / "720p.mp4", (1280, 720), frames / fps, fps)
    settings = RestoreSettings(task="bfr", weights=str(weights), seed=0, precision=precision, device=device)
    notes: list[str] = []
    files = PhotoRestorer(settings, log=notes.append)
    t0 = time.perf_counter()
    files.prepare()  # model (and calibration, the first time), detector: start-up, not per-frame work
    load = time.perf_counter() - t0
    record = restore_video(src, folder / "720p_out.mp4", settings=settings, options=VideoOptions(), files=files)
    t = record.timings
    wall = t["stages_wall"]
    parts = {
        "detection": t["detect"],
        "tracking": t["track"],
        "align_paste_convert": t["restore"] - t["model"] - t["detect"] - t["track"],
        "first_frame_wait": t["first_frame_wait"],
        "encoder_flush_at_end": t["encode_tail"],
        "queue_waits": wall - t["restore"] - t["first_frame_wait"] - t["encode_tail"],
    }
    outside = 1.0 - t["model"] / wall
    once = t["first_frame_wait"] + t["encode_tail"]  # paid once per video, not per frame
    steady = 1.0 - t["model"] / (wall - once)
    bound = (wall - t["model"] + t["decode_cpu"] + t["encode_cpu"]) / wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    equal = equal_threads(src, files)
    return {"equal_threads": equal, "frames": record.frames, "fps": record.fps, "timings": t, "share_outside_model": round(outside, 4),
            "share_parts": {k: round(v / wall, 4) for k, v in parts.items()},
            "decode_cpu_share": round(t["decode_cpu"] / wall, 4), "encode_cpu_share": round(t["encode_cpu"] / wall, 4),
            "share_outside_model_bound": round(bound, 4), "share_outside_model_per_frame": round(steady, 4),
            "model_seconds_per_frame": round(t["model"] / max(1, record.frames), 3),
            "load_seconds": round(load, 1), "load_notes": notes, "peak_rss_mb_this_process": round(peak, 1),
            "faces_per_frame": record.faces_per_frame, "precision": files.model.precision,
            "precision_asked": precision, "model": "bfr full-size, random weights"}


def equal_threads(src: Path, files, rounds: int = 3) -> dict:  # type: ignore[no-untyped-def]
    """Per-frame work outside the model vs one model call, both on one torch thread, interleaved.

    A load-independent view of the share: on a busy machine the model's two
    OpenMP threads lose more to other processes than one-thread code does,
    which flatters the share measured in the run. Idle, two threads make the
    model ~1.8x faster, so the idle share is about outside / (outside + model / 1.8).
    """
    import torch

    from elir_cli.video.flicker import video_frames
    from elir_cli.video.frames import FrameRestorer, torch_threads

    frames = list(video_frames(src))
    restorer = FrameRestorer(files, restorer=lambda x: x)
    model = files.model
    param = next(model.parameters())
    crop = torch.rand(1, 3, 512, 512).to(param.dtype).contiguous(memory_format=torch.channels_last)
    outside, inside = [], []
    with torch_threads(1):
        restorer.restore(frames[0], time_s=0.0, frame=0, default_dt=0.2)
        for k in range(rounds):
            t0 = time.perf_counter()
            for i in range(1, len(frames)):
                restorer.restore(frames[i], time_s=(k * len(frames) + i) * 0.2, frame=k * len(frames) + i,
                                 default_dt=0.2)
            outside.append((time.perf_counter() - t0) / (len(frames) - 1))
            t0 = time.perf_counter()
            model.restore(crop.float(), generator=torch.Generator().manual_seed(0))
            inside.append(time.perf_counter() - t0)
    o, m = sorted(outside)[len(outside) // 2], sorted(inside)[len(inside) // 2]
    return {"outside_per_frame_s": round(o, 4), "model_per_face_s": round(m, 3), "share": round(o / (o + m), 4),
            "share_idle_estimate": round(o / (o + m / 1.8), 4),
            "full_detections": restorer.timings.full_detections, "crop_detections": restorer.timings.crop_detections}


def memory(folder: Path, seconds_list: list[float]) -> dict:
    out = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for seconds in seconds_list:
        src = clip(folder / f"1080p_{seconds:g}s.mp4", (1920, 1080), seconds, 5)
        done = subprocess.run([*WORKER, str(src), str(folder / f"mem_out_{seconds:g}.mp4")],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        data = json.loads(done.stdout.splitlines()[-1])
        out[f"{seconds:g}s"] = {"frames": data["frames"], "peak_rss_mb": round(data["max_rss_kb"] / 1024, 1),
                                "start_rss_mb": round(data["start_rss_kb"] / 1024, 1),
                                "segment_peaks_mb": [round(kb / 1024, 1) for kb in data["segment_peaks_kb"]]}
    return out


def flicker_runs(folder: Path) -> dict:
    import torch

    from elir_cli.faces.detection import FaceDetector
    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.pipeline.settings import RestoreSettings
    from elir_cli.video.flicker import face_boxes, flicker
    from elir_cli.video.stream import VideoOptions, restore_video
    from tests.helpers.tiny import TINY, tiny_model
    from tests.helpers.video_worker import pattern_restorer

    weights = save_safetensors(folder / "tiny_bfr.safetensors", tiny_model(0).state_dict(), TINY, task="bfr")
    src = clip(folder / "flicker.mp4", (320, 240), 2.0, 10, noise=12)
    boxes = face_boxes(src, FaceDetector())
    result: dict[str, dict[str, float]] = {}
    settings = RestoreSettings(task="bfr", weights=str(weights), seed=0, steps=1)
    for restorer_name, restorer in (("tiny ELIR", None), ("stand-in (crop-fixed texture)", pattern_restorer())):
        row = {"input": round(flicker(src, boxes), 3)}
        for tracking in (False, True):
            out = folder / f"flicker_{tracking}_{len(result)}.mp4"
            restore_video(src, out, settings=settings, restorer=restorer, options=VideoOptions(tracking=tracking))
            row["tracked" if tracking else "untracked"] = round(flicker(out, boxes), 3)
        result[restorer_name] = row
    del torch
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24, help="frames of the 720p speed run (0 skips it)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); on a shared, loaded machine 1 avoids OpenMP stalls")
    parser.add_argument("--memory-seconds", type=float, nargs="*", default=[10.0, 40.0, 80.0],
                        help="lengths (s) of the 1080p memory clips; 0 (or nothing) skips the memory part")
    parser.add_argument("--no-flicker", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if any(seconds < 0 for seconds in args.memory_seconds):
        parser.error("--memory-seconds takes lengths >= 0 (0 skips the memory part)")
    memory_seconds = [seconds for seconds in args.memory_seconds if seconds > 0]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_average": os.getloadavg(), "torch_threads": args.threads or "default"}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.frames:
            t0 = time.perf_counter()
            results["speed_720p"] = s = speed(folder, args.frames, args.precision, args.device)
            parts = ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f} %" for k, v in s["share_parts"].items())
            print(f"720p bfr (full-size random weights, {s['precision']} from --precision {args.precision}): "
                  f"{s['fps']} fps over {s['frames']} frames ({s['model_seconds_per_frame']} s of model a frame); "
                  f"time outside the model per frame (steady state: without the once-per-video first frame and "
                  f"x264's final flush) {100 * s['share_outside_model_per_frame']:.1f} % "
                  f"(target < {100 * (1 - MODEL_SHARE_TARGET):.0f} %); all {100 * s['share_outside_model']:.1f} %: {parts}; "
                  f"beside the model: decode {100 * s['decode_cpu_share']:.1f} %, "
                  f"encode {100 * s['encode_cpu_share']:.1f} % of the wall in CPU time "
                  f"(upper bound with them: {100 * s['share_outside_model_bound']:.1f} %); "
                  f"faces a frame: mean {sum(s['faces_per_frame']) / max(1, len(s['faces_per_frame'])):.2f}, "
                  f"max {max(s['faces_per_frame'], default=0)}; "
                  f"peak RSS {s['peak_rss_mb_this_process']} MB; model load {s['load_seconds']} s "
                  f"[{time.perf_counter() - t0:.0f} s]")
            e = s["equal_threads"]
            print(f"  same work on one torch thread each, interleaved: {e['outside_per_frame_s']} s outside the model "
                  f"a frame (detection, tracking, paste; full detections {e['full_detections']}, crops "
                  f"{e['crop_detections']}) vs {e['model_per_face_s']} s a face in the model: "
                  f"{100 * e['share']:.1f} %; idle estimate with the model on two threads "
                  f"{100 * e['share_idle_estimate']:.1f} %")
            print(f"  timings {s['timings']}")
        if not memory_seconds:
            print("memory part skipped (--memory-seconds 0)")
        else:
            results["memory_1080p"] = m = memory(folder, memory_seconds)
            print("1080p peak RSS by length (stand-in restorer, real detection/tracking/encode): "
                  + ", ".join(f"{k}: {v['peak_rss_mb']} MB ({v['frames']} frames)" for k, v in m.items())
                  + f" (target < {MEMORY_TARGET_MB} MB and flat)")
            for k, v in m.items():
                print(f"  {k}: RSS before the run {v['start_rss_mb']} MB, peak when each segment was finished "
                      f"{v['segment_peaks_mb']} MB")
        if not args.no_flicker:
            results["flicker"] = f = flicker_runs(folder)
            for name, row in f.items():
                print(f"flicker ({name}): input {row['input']}, untracked {row['untracked']}, tracked {row['tracked']}")
    results["machine"]["load_average_after"] = os.getloadavg()
    print(f"load average before/after: {results['machine']['load_average']} / {results['machine']['load_average_after']}"
          " (2 shared cores: other jobs were running)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
