"""Weights in 64-byte-aligned memory, whatever file format they came from.

Why: on x86 CPUs some kernels (oneDNN's and ATen's AVX2 code among them)
take a different path, and so a different summation order, when a weight
starts at an address that is not a multiple of the vector width. A tensor
read from a safetensors file lands wherever the file's header leaves it (a
measured ``data_ptr() % 64 == 44``), one from ``torch.load`` at the
allocator's 64-byte boundary, so the same weights gave outputs 1.6e-6 apart
depending on the file's format (and on the length of its metadata).
Placing every weight at a 64-byte boundary before the first forward makes an
output depend only on the weights' values, not on where they were read from.

64 bytes is one AVX-512 register and one cache line on every x86-64 and
ARM64 CPU we know of; PyTorch's own CPU allocator aligns to the same
(``c10::gAlignment``), so a fresh allocation is already aligned and this
module only checks that, over-allocating where an allocator does not.
"""

from __future__ import annotations

import torch

ALIGNMENT_BYTES = 64


def is_aligned(tensor: torch.Tensor, alignment: int = ALIGNMENT_BYTES) -> bool:
    """Whether ``tensor``'s first element sits on an ``alignment``-byte boundary."""
    return tensor.data_ptr() % alignment == 0


def aligned_empty(shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
                  alignment: int = ALIGNMENT_BYTES) -> torch.Tensor:
    """An uninitialised, contiguous CPU tensor whose data starts on an ``alignment`` boundary."""
    out = torch.empty(shape, dtype=dtype)
    if is_aligned(out, alignment) or out.numel() == 0:
        return out
    # The allocator aligns less than asked: take a larger byte buffer and start inside it.
    nbytes = out.numel() * out.element_size()
    buffer = torch.empty(nbytes + alignment, dtype=torch.uint8)
    skip = -buffer.data_ptr() % alignment
    return buffer[skip:skip + nbytes].view(dtype).view(shape)


def aligned(tensor: torch.Tensor, dtype: torch.dtype | None = None,
            alignment: int = ALIGNMENT_BYTES) -> torch.Tensor:
    """``tensor`` as a contiguous CPU tensor of ``dtype`` at an aligned address.

    Returns ``tensor`` itself when it already is one; otherwise a copy (one
    tensor at a time, so a state dict never needs two whole copies in memory).
    Tensors on other devices are returned as they are: device allocators
    (CUDA's 512-byte blocks, MPS pages) align far more coarsely than this.
    """
    dtype = dtype or tensor.dtype
    if tensor.device.type != "cpu":
        return tensor.to(dtype=dtype).contiguous()
    if tensor.dtype == dtype and tensor.is_contiguous() and (is_aligned(tensor, alignment) or tensor.numel() == 0):
        return tensor
    out = aligned_empty(tensor.shape, dtype, alignment)
    out.copy_(tensor)
    return out
