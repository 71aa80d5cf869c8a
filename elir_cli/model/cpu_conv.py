"""Convolutions with their activation and residual add fused, on the CPU (oneDNN).

In float32 on a CPU, ``F.conv2d`` reorders its weight into oneDNN's blocked
layout at every call (~45 ms per bfr face, mostly the vector field's 512- and
256-channel kernels), and each ReLU, SiLU or residual add after it is one more
pass over a 64 MB activation. oneDNN can do both inside the conv: post-ops
for the activation and the add, and a weight packed once. This module calls
the operators PyTorch's own CPU compiler (Inductor) emits for that,
``torch.ops.mkldnn._convolution_pointwise`` with weights from
``_reorder_convolution_weight``, and falls back to plain ``F.conv2d`` and
separate ops whenever they do not apply: another device or dtype, autocast,
autograd, ``torch.compile`` tracing, an NCHW input, oneDNN switched off
(``torch.backends.mkldnn``), a conv with hooks or string padding, or a
PyTorch without the operators. Both paths compute ``act(conv(x) + add)``;
their results agree to float rounding.

A conv's weight is packed once, for the first input shape it meets (one copy
of the weights, whatever the shapes later). An input of another shape still
gets the right answer: oneDNN reorders the weight for it, as plain
``F.conv2d`` always does. The pack is redone when the weight changes: the
cache holds a detached alias of the weight it packed, which shares the
weight's version counter (moved by every in-place write, as in
``load_state_dict``) and keeps its storage alive, so a replaced weight can
never pass for it at the same address. Writes through ``weight.data`` bypass
the version counter; after those, call :func:`clear_packed_weights`.
Inference tensors (weights created under ``torch.inference_mode``) have no
version counter: they are used unpacked, still with the fused post-ops.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterator, Literal

import torch
from torch import nn
from torch.nn import functional as F

Activation = Literal["none", "relu", "silu"]
ONEDNN_ACTIVATION = {"none": "none", "relu": "relu", "silu": "swish"}
# conv module (identity-hashed; a tensor key would be compared elementwise)
#   -> (detached alias of the weight that was packed, its version then, packed weight)
_packed: "weakref.WeakKeyDictionary[nn.Conv2d, tuple[torch.Tensor, int, torch.Tensor]]" = weakref.WeakKeyDictionary()


def fused_conv_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused conv and weight-packing operators."""
    mkldnn = torch.ops.mkldnn
    try:
        return (torch.backends.mkldnn.is_available()
                and hasattr(mkldnn._convolution_pointwise, "binary")
                and hasattr(mkldnn, "_reorder_convolution_weight"))
    except (AttributeError, RuntimeError):  # torch.ops resolves names lazily and raises for unknown ones
        return False


# Activations and weights both in one of these dtypes take the fused path. bf16 is
# there for models whose weights were cast once (runtime.prepare_model); under
# a bf16 autocast its convs are no-ops for autocast (already bf16), so fusing
# them computes what autocast would.
FUSED_DTYPES = (torch.float32, torch.bfloat16)
_AVAILABLE: bool | None = None
_plain_depth = 0


@contextlib.contextmanager
def plain_convs() -> Iterator[None]:
    """Inside this block every conv takes the plain PyTorch path (process-wide).

    For tools that only see ATen ops, such as ``torch.utils.flop_counter``,
    and for comparing the two paths.
    """
    global _plain_depth
    _plain_depth += 1
    try:
        yield
    finally:
        _plain_depth -= 1


def clear_packed_weights() -> None:
    """Forget every packed weight (after writing weights through ``.data``)."""
    _packed.clear()


def _fast_path(x: torch.Tensor, conv: nn.Conv2d, add: torch.Tensor | None) -> bool:
    global _AVAILABLE
    if _plain_depth or x.device.type != "cpu" or x.dtype not in FUSED_DTYPES or conv.weight.dtype != x.dtype:
        return False
    if conv.bias is not None and conv.bias.dtype != x.dtype:
        return False
    if torch.compiler.is_compiling():  # torch.compile traces plain ops and fuses them itself
        return False
    if torch.is_grad_enabled() or not torch.backends.mkldnn.enabled:
        return False
    if _cpu_autocast_enabled() and (x.dtype == torch.float32 or _cpu_autocast_dtype() != x.dtype):
        return False  # autocast would cast this conv: leave it to autocast
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or _has_hooks(conv):
        return False
    if not (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return False
    if add is not None and not add.is_contiguous(memory_format=torch.channels_last):
        return False
    if _AVAILABLE is None:
        _AVAILABLE = fused_conv_available()
    return _AVAILABLE


def _cpu_autocast_dtype() -> torch.dtype:
    try:
        return torch.get_autocast_dtype("cpu")
    except (TypeError, AttributeError):  # before torch 2.4
        return torch.get_autocast_cpu_dtype()


def _has_hooks(conv: nn.Conv2d) -> bool:
    """Hooks (weight_norm, pruning, user hooks) expect ``conv(x)`` to be called: leave those convs plain."""
    return bool(conv._forward_hooks or conv._forward_pre_hooks or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # before torch 2.4 the device-type argument did not exist
        return torch.is_autocast_cpu_enabled()


def packed_weight(conv: nn.Conv2d, input_shape: torch.Size) -> torch.Tensor:
    """``conv.weight`` in the blocked layout oneDNN picks for ``input_shape``, packed once per weight version.

    An inference tensor (no version counter to watch) comes back as it is, unpacked.
    """
    weight = conv.weight.detach()  # an alias: same storage, same version counter
    if weight.is_inference():
        return weight
    cached = _packed.get(conv)
    if cached is not None:
        alias, version, packed = cached
        if alias.data_ptr() == weight.data_ptr() and alias._version == version == weight._version:
            return packed
    packed = torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(input_shape))
    _packed[conv] = (weight, weight._version, packed)
    return packed


def conv2d_act(x: torch.Tensor, conv: nn.Conv2d, act: Activation = "none",
               add: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``act(conv(x) + shift + add)``, fused by oneDNN on the CPU when it applies.

    ``add`` must have the conv output's shape; ``shift`` is per channel,
    (B|1, out), broadcast over H and W (the vector field's time embedding).
    On the fused path a (1, out) shift is folded into the conv's bias, so it
    costs no pass over the output. Without autograd the plain path works in
    place on the fresh conv output.
    """
    if _fast_path(x, conv, add) and (shift is None or shift.shape[0] == 1):
        bias = conv.bias
        if shift is not None:
            shift = shift[0].to(x.dtype)
            bias = shift if bias is None else bias + shift
        args = (bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        weight = packed_weight(conv, x.shape)
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, *args, ONEDNN_ACTIVATION[act], [], "")
        unary = "relu" if act == "relu" else None  # oneDNN fuses only ReLU after a binary add
        h = torch.ops.mkldnn._convolution_pointwise.binary(x, add, weight, *args, "add", None, unary, [], "")
        return F.silu(h, inplace=True) if act == "silu" else h
    inplace = not torch.is_grad_enabled()
    h = conv(x)
    if shift is not None:
        shift = shift[:, :, None, None].to(h.dtype)  # (B|1, out, 1, 1)
        h = h.add_(shift) if inplace else h + shift
    if add is not None:
        h = h.add_(add) if inplace else h + add
    if act == "relu":
        return F.relu(h, inplace=inplace)
    if act == "silu":
        return F.silu(h, inplace=inplace)
    return h
