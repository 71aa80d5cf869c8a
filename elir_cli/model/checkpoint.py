"""Reading, checking and writing ELIR weights, in one place.

Three formats are read, recognised by their content (never by file name):

- our ``.safetensors``: a flat state dict, the model config in its metadata,
  and the same facts once more as a small uint8 tensor (:data:`HEADER_KEY`)
  for loaders that keep only the tensors of a file (spandrel, ComfyUI);
- the authors' released ``.pth``: a flat state dict pickled by torch; read with
  ``torch.load(weights_only=True)`` only, so a pickle that holds code is refused
  and never runs;
- the authors' training ``.ckpt``: four state dicts with over-parametrised
  ("collapsible") convs, collapsed here exactly into single 3x3 convs.

Hyper-parameters come from our metadata, or from the tensor shapes plus the
sampler settings (K, sigma_s) that the caller supplies; never from file names.
This module knows nothing of tasks or downloads: :mod:`elir_cli.registry.loading`
adds the task's settings and finds the file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from elir_cli.atomicwrite import NEW_FILE_MODE, TEMP_TOKEN_BYTES
from elir_cli.errors import CheckpointError, StateDictMismatchError, UnsafeCheckpointError, UsageError
from .config import ModelConfig
from .placement import aligned

if TYPE_CHECKING:
    from .elir import ElirModel

FORMAT_NAME = "elir-cli"
FORMAT_VERSION = "1"
PREFIXES = ("enc.", "mmse.", "fmir.", "dec.")
CKPT_GROUPS = {
    "state_dict_enc": "enc.",
    "state_dict_mmse": "mmse.",
    "state_dict_fmir": "fmir.",
    "state_dict_dec": "dec.",
}
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
SAFETENSORS_LENGTH_BYTES = 8  # a safetensors file opens with its header's length, u64 little-endian
# The file's format, task and config as UTF-8 JSON in a uint8 tensor: the metadata's facts
# where only tensors travel (spandrel's and ComfyUI's loaders drop safetensors metadata).
# It is not a weight: every reader here takes it out of the state dict.
HEADER_KEY = "elir_cli.header"
COLLAPSE_KEY = re.compile(r"^(?P<stem>.*\.block\.)(?P<idx>\d+)\.weight$")

Format = Literal["safetensors", "pth", "ckpt"]


@dataclass
class Checkpoint:
    """A state dict read from a file, with what is known of its configuration."""

    state_dict: dict[str, torch.Tensor]
    format: Format
    config: ModelConfig | None = None
    task: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


# -- reading ----------------------------------------------------------------

def sniff_format(path: Path) -> Literal["safetensors", "torch"]:
    """Tell safetensors from a torch pickle by the first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"weights path is a folder, not a file: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if len(head) == 9:  # safetensors: u64 little-endian header length, then a JSON object
        header_len = int.from_bytes(head[:8], "little")
        if 8 + header_len <= size and header_len <= SAFETENSORS_MAX_HEADER and head[8:9] == b"{":
            return "safetensors"
    if head[:4] == ZIP_MAGIC or (head[:1] and head[0] == PICKLE_PROTO):
        return "torch"
    raise CheckpointError(
        f"{path} is not a weights file elir-cli can read",
        hint="expected an ELIR .safetensors, the authors' .pth or a training .ckpt",
    )


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read any supported weights file into a released-format state dict."""
    path = Path(path)
    if sniff_format(path) == "safetensors":
        return _read_safetensors(path)
    obj = _torch_load_safely(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if is_training_checkpoint(obj):
        return Checkpoint(state_dict=from_training_groups(obj, str(path)), format="ckpt")
    state, header = split_header(_only_tensors(obj, str(path)))
    config, task = _header_facts(header, str(path))
    return Checkpoint(state_dict=state, format="pth", config=config, task=task)


def is_training_checkpoint(obj: object) -> bool:
    """Whether ``obj`` is the authors' training format: the four state dicts of :data:`CKPT_GROUPS`."""
    return isinstance(obj, dict) and CKPT_GROUPS.keys() <= obj.keys() \
        and all(isinstance(obj[group], dict) for group in CKPT_GROUPS)


def from_training_groups(obj: dict, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The released-format state dict of a training checkpoint: prefixed, convs collapsed."""
    state: dict[str, torch.Tensor] = {}
    for group, prefix in CKPT_GROUPS.items():
        sub = _only_tensors(obj[group], f"{where}:{group}")
        state.update({prefix + k: v for k, v in collapse_overparametrized(sub).items()})
    return state


def split_header(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``state`` without our header tensor, and the header's JSON (None where there is none).

    A header that cannot be read is returned as ``{}``: the caller says the file is damaged.
    """
    if HEADER_KEY not in state:
        return state, None
    weights = {k: v for k, v in state.items() if k != HEADER_KEY}
    tensor = state[HEADER_KEY]
    try:
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8 or tensor.ndim != 1:
            raise ValueError("not a 1-D uint8 tensor")
        header = json.loads(bytes(tensor.cpu().tolist()).decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise ValueError("not an elir-cli header")
    except (ValueError, UnicodeDecodeError):
        return weights, {}
    return weights, header


def header_tensor(config: ModelConfig, task: str | None) -> torch.Tensor:
    """The header tensor of a file holding ``config`` (and ``task``)."""
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_dict()}
    if task:
        header["task"] = task
    data = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return torch.tensor(list(data), dtype=torch.uint8)


def _header_facts(header: dict | None, where: str) -> tuple[ModelConfig | None, str | None]:
    """The config and task a header records (None, None without one)."""
    if header is None:
        return None, None
    try:
        config = ModelConfig.from_dict(header["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where} has a damaged elir-cli header tensor ({HEADER_KEY}): {exc}") from None
    task = header.get("task")
    return config, task if isinstance(task, str) and task else None


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from None
    state, header = split_header(state)
    config, task = None, metadata.get("task") or None
    if metadata.get("format") == FORMAT_NAME:
        try:
            config = ModelConfig.from_dict(json.loads(metadata["config"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path} has a damaged elir-cli config in its metadata: {exc}") from None
    else:  # a file whose metadata was dropped on the way (re-saved by a tool that keeps only tensors)
        config, task = _header_facts(header, str(path))
    return Checkpoint(state_dict=state, format="safetensors", config=config, task=task, metadata=metadata)


def _torch_load_safely(path: Path) -> object:
    try:
        with open(path, "rb") as fh:  # a file object: torch must not guess the format from the name
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "not allowed"
        raise UnsafeCheckpointError(
            f"refused {path}: it holds Python objects, not just tensors ({first[:160]})",
            hint="only plain state dicts are loaded; code inside a checkpoint is never run",
        ) from None
    except Exception as exc:  # torch raises many types for damaged files; all mean "unreadable"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path} as a torch checkpoint: {message[:200]}",
                              hint="the file may be truncated; download it again") from None


def _only_tensors(obj: object, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where} holds entries that are not tensors: {', '.join(bad[:5])}")
    return dict(obj)


def collapse_overparametrized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold every (3x3 conv to 4x channels, 1x1 conv back) pair into one 3x3 conv.

    ``W[o,i] = sum_m W2[o,m] W1[m,i]`` and ``b = W2 @ b1 + b2``, computed in
    float64 and rounded once.
    """
    out = dict(state)
    for key in sorted(state):
        match = COLLAPSE_KEY.match(key)
        if not match:
            continue
        stem, idx = match["stem"], int(match["idx"])
        w1, w2_key = state[key], f"{stem}{idx + 1}.weight"
        w2 = state.get(w2_key)
        if w2 is None or w1.ndim != 4 or w2.ndim != 4 or w2.shape[2:] != (1, 1) \
                or w1.shape[2:] != (3, 3) or w2.shape[1] != w1.shape[0]:
            continue
        b1 = state.get(f"{stem}{idx}.bias")
        b2 = state.get(f"{stem}{idx + 1}.bias")
        w2m = w2[:, :, 0, 0].double()  # (out, mid)
        weight = torch.einsum("om,mikl->oikl", w2m, w1.double())
        bias = b2.double() if b2 is not None else torch.zeros(w2.shape[0], dtype=torch.float64)
        if b1 is not None:
            bias = bias + w2m @ b1.double()
        for suffix in ("weight", "bias"):
            out.pop(f"{stem}{idx + 1}.{suffix}", None)
        out[key] = weight.to(w1.dtype)
        out[f"{stem}{idx}.bias"] = bias.to(w1.dtype)
    return out


# -- configuration --------------------------------------------------------

def infer_architecture(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """Read the architecture hyper-parameters off the tensor shapes."""
    try:
        ch_mult = []
        i = 0
        while f"fmir.down_blocks.{i}.0.conv2d.weight" in state:
            down = state.get(f"fmir.down_blocks.{i}.1.conv.weight")
            ch_mult.append(1 if down is None else down.shape[0] // down.shape[1])
            i += 1
        return {
            "latent_channels": int(state["enc.layers.14.weight"].shape[0]),
            "rrdb_c_hid": int(state["mmse.lrm.0.RDB1.conv1.block.0.weight"].shape[0]),
            "n_rrdb": _count(state, "mmse.lrm.{}.RDB1.conv1.block.0.weight"),
            "hid_channels": int(state["fmir.first_proj.weight"].shape[0]),
            "n_mid_blocks": _count(state, "fmir.mid_blocks.{}.conv2d.weight"),
            "t_emb_dim": int(state["fmir.time_mlp.linear1.weight"].shape[1]),
            "ch_mult": tuple(ch_mult),
        }
    except KeyError as exc:
        raise CheckpointError(
            f"this is not an ELIR checkpoint (no tensor {exc.args[0]!r})",
            hint="expected keys under enc., mmse., fmir. and dec.",
        ) from None


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    n = 0
    while pattern.format(n) in state:
        n += 1
    return n


# -- building ----------------------------------------------------------------

def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`StateDictMismatchError` unless ``state`` fits ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing=missing, unexpected=unexpected,
                                     mismatched=mismatched, source=source)


def config_from_shapes(ckpt: Checkpoint, sampler: ModelConfig) -> ModelConfig:
    """The architecture read off the tensor shapes, with ``sampler``'s K, sigma_s and padding."""
    arch = infer_architecture(ckpt.state_dict)
    return ModelConfig(k_steps=sampler.k_steps, sigma_s=sampler.sigma_s,
                       pad_multiple=sampler.pad_multiple, **arch)  # type: ignore[arg-type]


def build_model(ckpt: Checkpoint, config: ModelConfig | None = None, *, task: str | None = None,
                source: str = "checkpoint") -> "ElirModel":
    """Build the network of ``config`` (default: the file's own) holding the file's tensors."""
    from .elir import ElirModel

    config = config or ckpt.config
    if config is None:
        raise UsageError(
            "the authors' checkpoints do not record their task (K and sigma_s)",
            hint="say which task they are for, e.g. task='bfr' (--task bfr)",
        )
    # Built on the meta device and handed the file's tensors (assign=True): no
    # random initialisation of 37 M parameters to overwrite (~0.2 s). Each
    # tensor is placed at a 64-byte boundary first (a copy only where the
    # reader left it elsewhere, as safetensors does), so the output does not
    # depend on the file's format: see :mod:`.placement`.
    with torch.device("meta"):
        model = ElirModel(config)
    check_state_dict(model, ckpt.state_dict, source)
    expected = model.state_dict()
    state = {k: aligned(v, expected[k].dtype) for k, v in ckpt.state_dict.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.task = task or ckpt.task
    return model.eval()


# -- writing ------------------------------------------------------------------

def save_safetensors(path: str | os.PathLike[str], state: dict[str, torch.Tensor],
                     config: ModelConfig, task: str | None = None,
                     extra_metadata: dict[str, str] | None = None) -> Path:
    """Write our format atomically: tensors + config (and task) in the metadata and the header tensor."""
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "config": json.dumps(config.to_dict(), sort_keys=True)}
    if task:
        metadata["task"] = task
    metadata.update(extra_metadata or {})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k != HEADER_KEY}
    tensors[HEADER_KEY] = header_tensor(config, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of our own, created with the mode any new file gets (the umask applies:
    # mkstemp's 0600 would leave a model unreadable by the others who share a ComfyUI or a cache).
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE))
    mode = os.stat(tmp).st_mode & 0o777  # the safetensors writer replaces the file with a 0600 one
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, mode)
        _sort_safetensors_metadata(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _sort_safetensors_metadata(path: str | os.PathLike[str]) -> None:
    """Put a safetensors header's metadata in sorted order, in place, at the same length.

    The safetensors writer emits the metadata in hash-map order, which differs
    from run to run; sorted, the same tensors and metadata give the same bytes
    (and the same sha256): a store or a hub upload of the same weights does not change.
    """
    with open(path, "r+b") as fh:
        length = int.from_bytes(fh.read(SAFETENSORS_LENGTH_BYTES), "little")
        header = json.loads(fh.read(length))
        metadata = header.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > length:  # cannot happen for the same content; leave the file as written
            return
        fh.seek(SAFETENSORS_LENGTH_BYTES)
        fh.write(text + b" " * (length - len(text)))  # the writer pads with spaces too
