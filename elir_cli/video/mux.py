"""Encoding restored frames into segment files, and joining segments with the input's audio.

A segment is a video-only file in the output's container, encoded with the
chosen codec; frames keep the input's timestamps (variable frame rate passes
through). Joining copies the segments' packets (no re-encoding) into the
output, interleaved by time with the input's audio and subtitle packets:
copied as they are where the container takes them, audio re-encoded (AAC, or
Opus for WebM) where it does not, subtitles the container cannot hold dropped
with a note. The rotation of the input is written as the output's display
matrix.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from elir_cli.errors import UsageError

from .media import (DEFAULT_CRF, DEFAULT_PRESET, VideoError, VideoInfo, _ffmpeg_reason, audio_encoder,
                    audio_fits, require_av, subtitles_fit)

if TYPE_CHECKING:
    import av

# x264/x265 need even sizes in 4:2:0; odd sizes are encoded in 4:4:4 instead of being cropped.
PIX_FMT = "yuv420p"
PIX_FMT_ODD = "yuv444p"
BT709 = 1
# One swscale conversion at a time: PyAV's reformat releases the GIL, and
# conversions in the decoder and encoder threads are cheap next to the model.
SWSCALE_LOCK = threading.Lock()
# The encoder runs on the encode stage's own thread, no threads of its own:
# (1) libx264's output depends on its thread count, so a count that changed
# with the machine's cores would give other bytes for the same frames (see
# also X264_WITHOUT_AVX512); (2) the model keeps the cores:
# extra encoder threads preempt torch's OpenMP team and stall its barriers;
# (3) the encode stage's CPU time is then measurable (``time.thread_time``).
# 720p x264 medium takes ~0.07 s of CPU a frame here, far below the model.
ENCODE_THREADS = 1


# libx264's AVX-512 code makes its output depend on uninitialised heap memory:
# the same frames encoded twice gave other bytes whenever the heap held
# other garbage (always, with video's tuned heap: model.runtime.tune_cpu_allocator),
# and identical bytes with its AVX2 code or on fresh memory. On CPUs with
# AVX-512 the encoder is given the AVX2 instruction set (and 64-byte cache
# lines, as detected there); x264's AVX2 and AVX-512 code give the same
# bytes where the latter is deterministic, for 11 % more encoder CPU (720p
# medium, best of six rounds: 60.8 -> 67.3 ms a frame), under 1 % of a bf16
# frame's time. Other CPUs keep x264's own detection.
X264_WITHOUT_AVX512 = "asm=avx2,cache64"


def cpu_has_avx512() -> bool:
    """Whether this CPU has AVX-512, as x264 sees it: the hardware's (cpuinfo), not the code
    PyTorch chose to run (``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 CPU leaves x264 on AVX-512).
    False when unknown."""
    try:
        import torch

        probe = getattr(torch.cpu, "_is_avx512_supported", None)  # the CPU's flags (PyTorch >= 2.3)
        if probe is not None:
            return bool(probe())
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    except Exception:  # noqa: BLE001 - an unknown CPU keeps the encoder's own detection
        return False


@dataclass(frozen=True)
class EncodeOptions:
    container: str  # FFmpeg muxer name
    encoder: str  # FFmpeg encoder name
    crf: int | None = None
    preset: str | None = None

    def codec_options(self) -> dict[str, str]:
        crf = self.crf if self.crf is not None else DEFAULT_CRF.get(self.encoder)
        options: dict[str, str] = {}
        if crf is not None:
            options["crf"] = str(crf)
            if self.encoder == "libvpx-vp9":
                options["b"] = "0"  # constant quality
        preset = self.preset if self.preset is not None else DEFAULT_PRESET.get(self.encoder)
        if preset is not None:
            if self.encoder not in DEFAULT_PRESET and not self.encoder.endswith(("_nvenc", "_qsv")):
                raise UsageError(f"--preset does not apply to {self.encoder}",
                                 hint=f"--preset works with: {', '.join(DEFAULT_PRESET)}")
            options["preset"] = str(preset)
        if self.encoder == "libx264" and cpu_has_avx512():
            options["x264-params"] = X264_WITHOUT_AVX512
        return options

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "encoder": self.encoder, "options": self.codec_options()}


def _colorspace_name(info: VideoInfo) -> str:
    return "ITU709" if info.colorspace == BT709 or (info.colorspace == 2 and info.height >= 720) else "ITU601"


class FrameConverter:
    """Decoded frames to uint8 HxWx3 RGB (the input's colour matrix).

    Each stage owns its own reformatter (``VideoFrame.reformat`` shares one
    swscale context between threads), and conversions take
    :data:`SWSCALE_LOCK`.
    """

    def __init__(self, info: VideoInfo) -> None:
        av = require_av()
        self._reformatter = av.video.reformatter.VideoReformatter()
        self._colorspace = _colorspace_name(info)

    def rgb(self, frame: "av.VideoFrame") -> np.ndarray:
        with SWSCALE_LOCK:
            return self._reformatter.reformat(frame, format="rgb24", src_colorspace=self._colorspace).to_ndarray()


class SegmentWriter:
    """Encodes frames into one segment file; :meth:`close` flushes and closes it."""

    def __init__(self, path: Path, info: VideoInfo, options: EncodeOptions, size: tuple[int, int]) -> None:
        av = require_av()
        self.info = info
        self.path = path
        width, height = size
        self.pix_fmt = PIX_FMT if width % 2 == 0 and height % 2 == 0 else PIX_FMT_ODD
        try:
            self.container = av.open(str(path), mode="w", format=options.container)
            stream = self.container.add_stream(options.encoder, rate=info.rate, options=options.codec_options())
            stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
            stream.codec_context.thread_count = ENCODE_THREADS
            stream.time_base = info.time_base
            stream.codec_context.time_base = info.time_base
            if info.rotation:
                stream.set_display_rotation(info.rotation)
            for name in ("colorspace", "color_range"):
                value = getattr(info, name)
                if value:
                    try:
                        setattr(stream.codec_context, name, value)
                    except (AttributeError, TypeError, ValueError):
                        pass  # an older PyAV without the setter: the tag is left unset
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot start the {options.encoder} encoder: {_ffmpeg_reason(exc)}",
                             hint="try another --codec, --preset or --crf") from None
        self.stream = stream
        self._colorspace = _colorspace_name(info)
        self._reformatter = av.video.reformatter.VideoReformatter()  # this thread's own (see FrameConverter)

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        av = require_av()
        with SWSCALE_LOCK:
            frame = self._reformatter.reformat(av.VideoFrame.from_ndarray(rgb, format="rgb24"), format=self.pix_fmt,
                                               dst_colorspace=self._colorspace)
        frame.pts = pts
        frame.time_base = self.info.time_base
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is removed anyway
            pass


def join(segments: list[Path], info: VideoInfo, target: Path, container: str, *, name: str | None = None) -> list[str]:
    """Write ``target``: the segments' video, copied, with the input's audio and subtitles.

    ``name`` is the output's name for messages (``target`` may be a temporary
    file). Returns notes for the user (audio re-encoded, subtitles dropped).
    """
    av = require_av()
    notes: list[str] = []
    out = av.open(str(target), mode="w", format=container)
    opened = []
    try:
        src = av.open(str(info.path), mode="r")
        opened.append(src)
        first = av.open(str(segments[0]), mode="r")
        opened.append(first)
        video_out = out.add_stream_from_template(first.streams.video[0])
        if info.rotation:
            video_out.set_display_rotation(info.rotation)
        copy: dict[int, Any] = {}
        recode: dict[int, Any] = {}
        for stream in src.streams.audio:
            name = stream.codec_context.name
            if audio_fits(container, name):
                copy[stream.index] = out.add_stream_from_template(stream)
            else:
                encoder = audio_encoder(container)
                # the default layout for the channel count ("1 channels" from PCM has no order AAC accepts)
                channels = len(stream.codec_context.layout.channels)
                layout = {1: "mono", 2: "stereo"}.get(channels, stream.codec_context.layout.name)
                recode[stream.index] = out.add_stream(encoder, rate=stream.codec_context.sample_rate or 48000,
                                                      layout=layout)
                notes.append(f"audio stream {stream.index} ({name}) cannot go into {container} as it is; "
                             f"re-encoded as {encoder}")
        for stream in src.streams.subtitles:
            name = stream.codec_context.name
            if subtitles_fit(container, name):
                copy[stream.index] = out.add_stream_from_template(stream)
            else:
                notes.append(f"subtitle stream {stream.index} ({name}) cannot go into {container}; dropped")
        iterators = [_video_packets(segments, video_out, opened)]
        if copy or recode:
            iterators.append(_source_packets(src, copy, recode))
        counter = itertools.count()
        merged = heapq.merge(*(((_key(p), next(counter), p) for p in it) for it in iterators),
                             key=lambda item: (item[0], item[1]))
        for _, _, packet in merged:
            out.mux(packet)
        out.close()
    except av.error.FFmpegError as exc:
        _close_quietly(out)
        raise VideoError(f"cannot write {name or target}: {_ffmpeg_reason(exc)}",
                         hint="free some disk space, then run the same command again: "
                              "the finished segments are kept") from None
    except BaseException:
        _close_quietly(out)
        raise
    finally:
        for c in opened:
            _close_quietly(c)
    return notes


def _key(packet: Any) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None and packet.time_base else 0.0


def _video_packets(segments: list[Path], video_out: Any, opened: list[Any]) -> Iterator[Any]:
    av = require_av()
    for path in segments:
        container = av.open(str(path), mode="r")
        opened.append(container)
        for packet in container.demux(container.streams.video[0]):
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's end-of-stream packet
            packet.stream = video_out
            yield packet
        container.close()


def _source_packets(src: Any, copy: dict[int, Any], recode: dict[int, Any]) -> Iterator[Any]:
    wanted = [s for s in src.streams if s.index in copy or s.index in recode]
    for packet in src.demux(wanted):
        index = packet.stream.index
        if index in copy:
            if packet.dts is None and packet.pts is None:
                continue
            packet.stream = copy[index]
            yield packet
        else:
            for frame in packet.decode():
                frame.pts = None  # let the encoder number samples from the first
                yield from recode[index].encode(frame)
    for stream in recode.values():
        yield from stream.encode(None)


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
        pass
