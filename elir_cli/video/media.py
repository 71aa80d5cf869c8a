"""PyAV behind one import guard; videos recognised by content; probing; codecs and containers.

Why PyAV (``pip install av``, which ships its own FFmpeg libraries) rather than
the ``ffmpeg`` command line: decoded frames carry their own timestamps, so
variable-frame-rate video is passed through frame by frame with no parsing of
``ffprobe`` output; audio and subtitle packets are copied without re-encoding
in the same process; the rotation (display matrix) is read from frames and
written with ``set_display_rotation``. The ``ffmpeg`` executable is not needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elir_cli.errors import ElirError, UsageError

if TYPE_CHECKING:
    import av

INSTALL_HINT = 'install the video extra: pip install "elir-cli[video]"'
HEADER_BYTES = 16
MPEG_TS_PACKET = 188
# ISO-BMFF brands of still images (AVIF/HEIF), which share the "ftyp" box with MP4.
IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis")
# Top-level QuickTime atoms a .mov may start with instead of "ftyp".
MOV_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")

# Output container, from the output's name: suffix -> FFmpeg muxer.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
              ".avi": "avi"}

# --codec names -> encoders, best first; the first the FFmpeg build has is used.
CODECS = {
    "h264": ("libx264",), "h265": ("libx265",), "hevc": ("libx265",), "vp9": ("libvpx-vp9",),
    "av1": ("libsvtav1", "libaom-av1"),
}
HARDWARE_ENCODERS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc", "h264_qsv", "hevc_qsv", "h264_vaapi",
                     "hevc_vaapi", "h264_videotoolbox", "hevc_videotoolbox")
DEFAULT_CODEC = "h264"
HW_PROBE_SIZE = 256
# Visually lossless defaults per encoder (CRF-like scale of each).
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 24, "libaom-av1": 24}
DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8"}
# Audio codecs each container takes as they are; everything else is re-encoded.
# PCM is left out of MP4 on purpose: most players cannot play it there.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac", "mp2"}
WEBM_AUDIO = {"opus", "vorbis"}


class VideoError(ElirError):
    """A video that cannot be read, encoded or written."""


def require_av() -> Any:
    """The ``av`` module, or a one-line error saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV (FFmpeg), which is not installed", hint=INSTALL_HINT) from None
    return av


def sniff_video(header: bytes) -> bool:
    """Whether the first bytes of a file are those of a media container (MP4/MOV, Matroska/WebM,
    AVI, MPEG-TS/PS, FLV, Ogg, ASF); audio-only files of these containers count too."""
    if len(header) >= 12 and header[4:8] in MOV_ATOMS:
        return not (header[4:8] == b"ftyp" and header[8:12] in IMAGE_BRANDS)
    return (header.startswith(b"\x1a\x45\xdf\xa3")          # Matroska / WebM (EBML)
            or (header.startswith(b"RIFF") and header[8:12] == b"AVI ")
            or header.startswith(b"\x00\x00\x01\xba")       # MPEG program stream
            or header.startswith(b"FLV")
            or header.startswith(b"OggS")
            or header.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"))  # ASF / WMV


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file whose content is a media container (not its name)."""
    target = Path(path)
    if not target.is_file():
        return False
    try:
        with target.open("rb") as handle:
            header = handle.read(MPEG_TS_PACKET + 1)
    except OSError:
        return False
    if len(header) > MPEG_TS_PACKET and header[0] == 0x47 and header[MPEG_TS_PACKET] == 0x47:
        return True  # MPEG transport stream: a sync byte every 188 bytes
    return sniff_video(header[:HEADER_BYTES])


@dataclass(frozen=True)
class VideoInfo:
    """What restoring a video needs to know of it before the first frame."""

    path: Path
    width: int
    height: int
    time_base: Fraction
    rate: Fraction  # average frame rate (for segment lengths and the encoder's rate control)
    frames: int | None  # from the container; None when it does not say (never relied on)
    duration: float | None  # seconds
    rotation: int  # degrees counter-clockwise, from the display matrix
    colorspace: int
    color_range: int
    audio: list[str] = field(default_factory=list)  # codec names
    subtitles: list[str] = field(default_factory=list)
    variable_rate: bool = False

    @property
    def frames_estimate(self) -> int | None:
        if self.frames:
            return self.frames
        if self.duration:
            return max(1, round(self.duration * float(self.rate)))
        return None


def open_input(path: Path) -> "av.container.InputContainer":
    av = require_av()
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoError(f"cannot read video {path}: {_ffmpeg_reason(exc)}",
                         hint="the file is damaged, truncated or not a video") from None


def probe_video(path: Path) -> VideoInfo:
    """Open ``path`` and describe its first video stream (decodes one frame for the rotation)."""
    av = require_av()
    with open_input(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise VideoError(f"{path} has no video stream (it holds {', '.join(kinds)})",
                             hint="give a video file")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        try:
            first = next(container.decode(stream))
        except StopIteration:
            raise VideoError(f"{path} has a video stream but no frame could be decoded",
                             hint="the file is damaged or truncated") from None
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode {path}: {_ffmpeg_reason(exc)}",
                             hint="the file is damaged, truncated or not a video") from None
        base = stream.base_rate or rate
        return VideoInfo(
            path=path, width=first.width, height=first.height, time_base=stream.time_base or Fraction(1, 90000),
            rate=Fraction(rate), frames=stream.frames or None, duration=duration,
            rotation=int(first.rotation or 0) % 360,
            colorspace=int(getattr(ctx, "colorspace", 2) or 2), color_range=int(getattr(ctx, "color_range", 0) or 0),
            audio=[s.codec_context.name for s in container.streams.audio],
            subtitles=[s.codec_context.name for s in container.streams.subtitles],
            variable_rate=bool(base and rate and abs(float(base) - float(rate)) > 0.01 * float(rate)),
        )


def container_format(path: Path) -> str:
    """The FFmpeg muxer for an output name; an error for names we cannot write."""
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot write a video named {path.name}: unknown container {path.suffix or '(none)'}",
                         hint=f"end the output name with one of: {', '.join(CONTAINERS)}")
    return fmt


def available_encoders() -> dict[str, str]:
    """--codec name -> the encoder this FFmpeg build has for it (hardware encoders by their own name)."""
    av = require_av()
    have = av.codec.codecs_available
    found = {}
    for name, encoders in CODECS.items():
        for encoder in encoders:
            if encoder in have and _is_encoder(av, encoder):
                found[name] = encoder
                break
    for encoder in HARDWARE_ENCODERS:
        if encoder in have and _is_encoder(av, encoder) and _opens(av, encoder):
            found[encoder] = encoder
    return found


def _opens(av: Any, name: str) -> bool:
    """Whether a hardware encoder really starts here (built in is not enough without its device)."""
    try:
        ctx = av.codec.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = HW_PROBE_SIZE, HW_PROBE_SIZE, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def resolve_encoder(codec: str) -> str:
    """The encoder for a --codec name; a one-line error listing what this build has."""
    found = available_encoders()
    key = codec.strip().lower()
    if key in found:
        return found[key]
    if key in found.values():
        return key
    raise UsageError(f"unknown or unavailable video codec {codec!r}",
                     hint=f"this FFmpeg build has: {', '.join(found) or 'no video encoder'}")


def _is_encoder(av: Any, name: str) -> bool:
    try:
        return av.codec.Codec(name, "w").type == "video"
    except Exception:  # noqa: BLE001 - PyAV raises several types for "no such encoder"
        return False


def audio_fits(container: str, codec: str) -> bool:
    """Whether an audio stream of ``codec`` can be copied as it is into ``container``."""
    if container == "mp4":
        return codec in MP4_AUDIO
    if container == "webm":
        return codec in WEBM_AUDIO
    if container == "avi":
        return codec in {"mp3", "ac3", "pcm_s16le", "mp2"}
    return True  # matroska and mov take what FFmpeg can mux; the muxer says so otherwise


def audio_encoder(container: str) -> str:
    return "libopus" if container == "webm" else "aac"


def subtitles_fit(container: str, codec: str) -> bool:
    if container in ("mp4", "mov"):
        return codec == "mov_text"
    if container == "matroska":
        return codec in {"subrip", "ass", "ssa", "webvtt", "hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle"}
    if container == "webm":
        return codec == "webvtt"
    return False


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).splitlines()[0][:200] if text else type(exc).__name__
