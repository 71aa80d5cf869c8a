"""Video: streaming restore with sound, timing, rotation, subtitles, resume, flat memory, less flicker.

Clips are made here with the ffmpeg executable from real photos (see
``tests/helpers/videoclips.py``): 160x120, 10 fps, 1-2 s, pan and zoom over a portrait, a
440 Hz sine track. Most tests plug in a cheap restorer whose output carries a
texture fixed to the crop grid (as a generative restorer's does); the CLI
tests run the real command with a tiny random ELIR.

Processes started here run torch on one thread: on a loaded 2-core machine
OpenMP's spin-waiting makes two threads many times slower than one.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the video tests need PyAV (pip install 'elir-cli[video,test]')")

from tests.helpers.cli_helpers import assert_one_line_error, run_elir, tiny_weights  # noqa: E402
from tests.helpers.torch_threads import one_torch_thread  # noqa: E402,F401 (an autouse fixture)
from tests.helpers.videoclips import (audio_packets, audio_samples, ffmpeg, ffmpeg_exe, frame_times, frames_rgb,  # noqa: E402
                        make_clip)
from tests.helpers.video_worker import HELD, pattern_restorer  # noqa: E402
from tests.helpers.waiting import read_line  # noqa: E402

from elir_cli.pipeline.settings import RestoreSettings
from elir_cli.video.media import VideoError, is_video_file  # noqa: E402
from elir_cli.video.stream import VideoOptions, restore_video  # noqa: E402

pytestmark = [pytest.mark.video,
              pytest.mark.skipif(ffmpeg_exe() is None, reason="no ffmpeg executable to make test clips "
                                 "(install imageio-ffmpeg or put ffmpeg on PATH)")]
WORKER = [sys.executable, "-m", "tests.helpers.video_worker"]  # worker_env() puts the checkout on PYTHONPATH
ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
FPS = 10
FRAME = 1.0 / FPS
AUDIO_TOLERANCE = 0.05  # s
SETTINGS = RestoreSettings(task="denoising", seed=0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "cfr": make_clip(folder / "cfr.mp4", seconds=2.0, fps=FPS),
        "vfr": make_clip(folder / "vfr.mp4", seconds=2.0, fps=FPS, vfr=True),
        "rot": make_clip(folder / "rot.mp4", seconds=1.0, fps=FPS, rotation=90, subtitles=True),
        "pcm": make_clip(folder / "pcm.mkv", seconds=1.0, fps=FPS, audio="pcm_s16le", photo="grace_hopper.jpg"),
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def worker_env() -> dict[str, str]:
    return {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}


def test_videos_are_recognised_by_content(tmp_path: Path, clips: dict[str, Path]) -> None:
    disguised = tmp_path / "holiday.jpg"  # a video with a photo's name
    disguised.write_bytes(clips["cfr"].read_bytes())
    assert is_video_file(disguised) and is_video_file(clips["pcm"])
    photos = ROOT / "tests" / "data" / "photos"
    assert not is_video_file(photos / "faces" / "astronaut.png")
    assert not is_video_file(photos / "awkward" / "hopper.avif")  # ISO-BMFF too, but an image
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert not is_video_file(text)


def test_constant_rate_clip_keeps_frames_timing_audio_and_input(tmp_path: Path, clips: dict[str, Path]) -> None:
    src = clips["cfr"]
    before = sha(src)
    out = tmp_path / "out.mp4"
    record = restore_video(src, out, settings=SETTINGS, restorer=pattern_restorer())
    assert sha(src) == before
    times_in, times_out = frame_times(src), frame_times(out)
    assert len(times_out) == len(times_in) == 20
    assert np.allclose(times_out, times_in, atol=FRAME / 2)
    # audio copied: the very same packets, so the same samples and duration
    assert audio_packets(out) == audio_packets(src)
    assert abs(audio_samples(out).shape[1] - audio_samples(src).shape[1]) / 48000 < AUDIO_TOLERANCE
    # the record: frames, faces per frame, one track, timings, settings
    assert record.frames == 20 and len(record.faces_per_frame) == 20 and min(record.faces_per_frame) == 1
    assert [t["id"] for t in record.tracks] == [0]
    assert record.timings["model"] > 0 and record.timings["encode"] > 0
    assert record.encode["encoder"] == "libx264"
    # the frames were restored (the stand-in's texture is in the face), not passed through
    diff = np.abs(frames_rgb(out)[10].astype(int) - frames_rgb(src)[10].astype(int)).mean()
    assert diff > 3
    assert not list(tmp_path.glob(".*"))  # no parts or temporary files left


def test_each_face_track_reports_its_faithfulness(tmp_path: Path, clips: dict[str, Path]) -> None:
    """Videos get per-track scores; the guard is not applied to them, and the record says so."""
    settings = RestoreSettings(task="denoising", seed=0, min_faithfulness=30.0)
    record = restore_video(clips["rot"], tmp_path / "out.mp4", settings=settings, restorer=pattern_restorer())
    (track,) = record.tracks
    assert track["faithfulness_db_min"] <= track["faithfulness_db_mean"] < 80  # the stand-in changes the faces
    assert track["delta_e_mean"] >= 0
    assert any("guard is not applied to videos" in w for w in record.warnings)


def test_variable_rate_clip_keeps_each_timestamp(tmp_path: Path, clips: dict[str, Path]) -> None:
    src = clips["vfr"]
    times_in = frame_times(src)
    assert len(set(np.round(np.diff(times_in), 3))) > 1  # really variable
    record = restore_video(src, tmp_path / "out.mp4", settings=SETTINGS, restorer=pattern_restorer())
    times_out = frame_times(tmp_path / "out.mp4")
    assert len(times_out) == len(times_in)
    assert np.allclose(times_out, times_in, atol=0.002)
    assert any("variable frame rate" in w for w in record.warnings)
    assert abs(audio_samples(tmp_path / "out.mp4").shape[1] - audio_samples(src).shape[1]) / 48000 < AUDIO_TOLERANCE


def test_rotation_and_subtitles_kept(tmp_path: Path, clips: dict[str, Path]) -> None:
    src = clips["rot"]
    out = tmp_path / "out.mp4"
    restore_video(src, out, settings=SETTINGS, restorer=pattern_restorer())
    with av.open(str(out)) as container:
        assert next(container.decode(video=0)).rotation == 90
        assert [s.codec_context.name for s in container.streams.subtitles] == ["mov_text"]
        subs = [bytes(p) for p in container.demux(subtitles=0) if p.size]
    with av.open(str(src)) as container:
        assert subs == [bytes(p) for p in container.demux(subtitles=0) if p.size]


def test_pcm_audio_is_reencoded_for_mp4_with_a_note(tmp_path: Path, clips: dict[str, Path]) -> None:
    from elir_cli.video.media import probe_video

    src = clips["pcm"]
    assert probe_video(src).frames is None  # Matroska records no frame count: nothing relies on it
    out = tmp_path / "out.mp4"
    record = restore_video(src, out, settings=SETTINGS, restorer=pattern_restorer(),
                           options=VideoOptions(codec="h264", crf=30, preset="ultrafast"))
    with av.open(str(out)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    assert any("re-encoded as aac" in w for w in record.warnings)
    assert record.frames == len(frame_times(src)) == 10
    assert abs(audio_samples(out).shape[1] - audio_samples(src).shape[1]) / 48000 < AUDIO_TOLERANCE
    # the same into Matroska: copied as it is
    record = restore_video(src, tmp_path / "out.mkv", settings=SETTINGS, restorer=pattern_restorer())
    assert audio_packets(tmp_path / "out.mkv") == audio_packets(src)
    assert not record.warnings


def test_tracking_flickers_less_than_per_frame_restoration(tmp_path: Path, clips: dict[str, Path]) -> None:
    from elir_cli.faces.detection import FaceDetector
    from elir_cli.video.flicker import face_boxes, flicker

    src = clips["cfr"]
    tracked, untracked = tmp_path / "tracked.mp4", tmp_path / "untracked.mp4"
    restore_video(src, tracked, settings=SETTINGS, restorer=pattern_restorer())
    restore_video(src, untracked, settings=SETTINGS, restorer=pattern_restorer(),
                  options=VideoOptions(tracking=False))
    boxes = face_boxes(src, FaceDetector())
    measured = {name: flicker(path, boxes) for name, path in
                (("input", src), ("untracked", untracked), ("tracked", tracked))}
    assert measured["tracked"] < 0.9 * measured["untracked"], measured


def run_worker(src: Path, dst: Path, *args: str, timeout: float = 240) -> dict:
    done = subprocess.run([*WORKER, str(src), str(dst), *args], capture_output=True,
                          text=True, env=worker_env(), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_memory_is_flat_in_the_video_length(tmp_path: Path) -> None:
    """Peak RSS of a 1 s and a 10 s clip (the face path without detection, to stay fast)."""
    short = make_clip(tmp_path / "short.mp4", seconds=1.0, fps=FPS)
    long = make_clip(tmp_path / "long.mp4", seconds=10.0, fps=FPS)
    peaks = {}
    for clip in (short, long):
        data = run_worker(clip, tmp_path / f"out_{clip.name}", "--aligned", "--segment", "2")
        peaks[clip.name] = data["max_rss_kb"] / 1024
        assert data["frames"] == (10 if clip is short else 100)
    assert peaks["long.mp4"] - peaks["short.mp4"] < 25, peaks  # MB; 90 more frames would be >5 MB each as floats



@pytest.mark.slow
def test_memory_does_not_grow_from_segment_to_segment_at_720p(tmp_path: Path) -> None:
    """Real detection, tracking and x264 at 720p, two 10 s segments (50 frames: x264's ~45
    frames of lookahead fill in each). The second segment must not raise the peak RSS
    by more than a small part of what the first one took: before the heap was trimmed
    (issue 13) it added ~21 % (95 MB on 452 MB), after ~6 % (24 MB on 416 MB)."""
    clip = make_clip(tmp_path / "720p.mp4", seconds=20.0, fps=5, size=(1280, 720), audio=None)
    data = run_worker(clip, tmp_path / "out.mp4", "--segment", "10")
    assert data["frames"] == 100
    first, last = data["segment_peaks_kb"][0], data["segment_peaks_kb"][-1]
    assert len(data["segment_peaks_kb"]) == 2, data["segment_peaks_kb"]
    grown_in_first = first - data["start_rss_kb"]
    assert grown_in_first > 100 * 1024, data  # the run itself took memory (x264's lookahead alone ~150 MB)
    assert last - first < 0.12 * grown_in_first, {"start": data["start_rss_kb"] // 1024,
                                                  "segments": [p // 1024 for p in data["segment_peaks_kb"]]}

@pytest.mark.slow
def test_resume_after_a_kill_gives_the_bytes_of_an_uninterrupted_run(tmp_path: Path, clips: dict[str, Path]) -> None:
    """At the default (lossy) settings, in two processes: the same bytes, so the same frames.

    This failed before libx264 was kept off its AVX-512 code on CPUs that have
    it (mux.X264_WITHOUT_AVX512): that code's output depends on uninitialised
    heap memory, so two runs gave other bytes although the frames and
    timestamps handed to the encoder were the same.
    """
    src = clips["cfr"]
    whole = tmp_path / "whole.mp4"
    settings = ("--segment", "0.5")  # default crf: lossy
    run_worker(src, whole, *settings)
    resumed = tmp_path / "resumed.mp4"
    manifest = resumed.parent / f".{resumed.name}.elir-parts" / "manifest.json"
    # The worker finishes two segments, writes the first frame of the third, says so and waits.
    proc = subprocess.Popen([*WORKER, str(src), str(resumed), *settings, "--hold-after", "2"], env=worker_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said = read_line(proc.stdout, 180, "the worker holding in its third segment")  # type: ignore[arg-type]
    finally:
        proc.kill()  # SIGKILL: nothing of the run gets to clean up
        _, err = proc.communicate()
    assert said.decode().strip() == HELD, f"the run ended before it could be killed: {err.decode()[-3000:]}"
    assert not resumed.exists()
    done_before = json.loads(manifest.read_text())["segments"]
    assert 2 <= len(done_before) < 4
    data = run_worker(src, resumed, *settings)
    assert data["resumed_at_frame"] == 5 * len(done_before)
    assert data["frames"] == 20
    assert not manifest.parent.exists()
    a, b = frames_rgb(whole), frames_rgb(resumed)
    assert len(a) == len(b) == 20
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert frame_times(whole) == frame_times(resumed)
    assert sha(whole) == sha(resumed)


# -- the command line ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_denoise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"), "denoising")


def elir(*args: str, env: dict[str, str] | None = None, **kw):  # type: ignore[no-untyped-def]
    return run_elir(*args, env={**ONE_THREAD, **(env or {})}, **kw)


@pytest.mark.slow
def test_cli_restores_a_video_and_a_photo_by_content(tmp_path: Path, tiny_denoise: Path) -> None:
    clip = make_clip(tmp_path / "clip.mov", seconds=0.5, fps=FPS)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mov").write_bytes(clip.read_bytes())
    (folder / "photo.png").write_bytes((ROOT / "tests/data/photos/faces/camera.png").read_bytes())
    out = tmp_path / "out"
    result = elir("batch", str(folder), "-o", str(out), "--weights", str(tiny_denoise), "--task", "denoising",
                  "--steps", "1", "--seed", "0", "--aligned", "--report", str(tmp_path / "run.json"))
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert (out / "photo.png").is_file()
    assert "clip.mov: frame 5/5" in result.stderr.decode()  # progress on stderr
    assert len(frame_times(out / "clip.mov")) == 5
    report = json.loads((tmp_path / "run.json").read_text())
    video = next(f for f in report["files"] if f["input"].endswith("clip.mov"))
    assert video["status"] == "restored" and video["frames"] == 5 and "timings" in video
    # restore, with the JSON record; the output exists afterwards, so a second run is refused
    single = tmp_path / "single.mp4"
    args = ("restore", str(clip), "-o", str(single), "--weights", str(tiny_denoise), "--task", "denoising",
            "--steps", "1", "--aligned", "--json")
    result = elir(*args)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    record = json.loads(result.stdout)["files"][0]
    assert record["frames"] == 5 and record["faces_per_frame"] == [1] * 5
    assert "already exists" in assert_one_line_error(elir(*args))


@pytest.mark.parametrize("case", ["truncated", "corrupt", "no_video", "unknown_codec", "no_pyav", "disk_full"])
def test_cli_one_line_errors(case: str, tmp_path: Path, clips: dict[str, Path], tiny_denoise: Path) -> None:
    src = tmp_path / "clip.mp4"
    data = clips["cfr"].read_bytes()
    extra: list[str] = []
    env: dict[str, str] = {}
    preexec = None
    if case == "truncated":
        src.write_bytes(data[: len(data) // 2])
    elif case == "corrupt":
        src.write_bytes(data[:32] + bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)))
    elif case == "no_video":
        ffmpeg("-f", "lavfi", "-t", "0.5", "-i", "sine=frequency=440", "-c:a", "aac", str(src))
    elif case == "unknown_codec":
        src.write_bytes(data)
        extra = ["--codec", "nosuchcodec"]
    elif case == "no_pyav":
        src.write_bytes(data)
        hidden = tmp_path / "hide"
        (hidden / "av").mkdir(parents=True)
        (hidden / "av" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
        env = {"PYTHONPATH": f"{hidden}{os.pathsep}{ROOT}", "PATH": ""}
    elif case == "disk_full":
        make_clip(src, seconds=0.3, fps=FPS)  # 3 frames: the model runs little before the disk "fills"
        limit = 4_000  # bytes a file may grow to: less than the restored clip

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    before = sha(src)
    out = tmp_path / "out.mp4"
    cmd = ["restore", str(src), "-o", str(out), "--weights", str(tiny_denoise), "--task", "denoising",
           "--steps", "1", "--aligned", *extra]
    if preexec is None:
        result = elir(*cmd, env=env)
    else:
        result = subprocess.run([sys.executable, "-m", "elir_cli", *cmd], capture_output=True, preexec_fn=preexec,
                                env={**os.environ, **ONE_THREAD}, timeout=300)
    line = assert_one_line_error(result)
    expected = {"truncated": "cannot read video", "corrupt": "cannot", "no_video": "no video stream",
                "unknown_codec": "unknown or unavailable video codec", "no_pyav": "needs PyAV",
                "disk_full": "cannot write"}[case]
    assert expected in line, result.stderr.decode()
    if case == "no_pyav":
        assert 'pip install "elir-cli[video]"' in result.stderr.decode()
    assert not out.exists()
    assert sha(src) == before


def test_library_error_for_a_file_without_video(tmp_path: Path) -> None:
    sound = tmp_path / "sound.m4a"
    ffmpeg("-f", "lavfi", "-t", "0.3", "-i", "sine=frequency=440", "-c:a", "aac", str(sound))
    with pytest.raises(VideoError, match="no video stream"):
        restore_video(sound, tmp_path / "out.mp4", settings=SETTINGS, restorer=pattern_restorer())


def test_restore_array_takes_the_faces_it_is_given() -> None:
    """The hook video uses in the photo pipeline: faces=... replaces detection and choice."""
    from PIL import Image

    from elir_cli.errors import UsageError
    from elir_cli.faces.detection import FaceDetector
    from elir_cli.pipeline.photo import pil_to_array
    from elir_cli.pipeline.restorer import restore_array

    rgb = pil_to_array(Image.open(ROOT / "tests/data/photos/faces/astronaut.png"))
    detector = FaceDetector()
    found = detector.detect(rgb)
    assert len(found) == 1
    detected = restore_array(rgb, task="denoising", restorer=pattern_restorer(), detector=detector)
    given = restore_array(rgb, task="denoising", restorer=pattern_restorer(), faces=found)
    assert np.array_equal(detected.array, given.array)
    moved = [found[0].__class__(index=0, box=found[0].box, score=1.0, landmarks=found[0].landmarks + 3.0)]
    shifted = restore_array(rgb, task="denoising", restorer=pattern_restorer(), faces=moved)
    assert not np.array_equal(shifted.array, given.array)  # the given landmarks place the crop
    none = restore_array(rgb, task="denoising", restorer=pattern_restorer(), faces=[])
    assert np.array_equal(none.array, rgb) and none.faces == []
    with pytest.raises(UsageError, match="excludes detection"):
        restore_array(rgb, task="denoising", restorer=pattern_restorer(), faces=found, max_faces=1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_trim_cpu_heap_gives_free_pages_back() -> None:
    """With the tuned allocator (nothing trimmed) freed memory stays resident until trim_cpu_heap."""
    from elir_cli.model.runtime import trim_cpu_heap, tune_cpu_allocator

    def rss_mb() -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

    assert tune_cpu_allocator()
    held = [np.ones(4_000_000, np.uint8) for _ in range(50)]  # 200 MB in the heap, pages touched
    small = [np.ones(1000, np.uint8) for _ in range(50)]  # live blocks after them keep the heap's top
    before_free = rss_mb()
    del held
    freed = rss_mb()
    assert freed > before_free - 50  # freed but still resident (no trim threshold, no mmap)
    assert trim_cpu_heap()
    assert rss_mb() < freed - 150, (before_free, freed, rss_mb())
    del small
