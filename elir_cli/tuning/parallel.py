"""Several processes training one model: ``torchrun`` (DDP) and the ranks of Ray Train.

Each rank computes its slice of the global batch (``--batch-size`` is the global batch,
split evenly) with the noise and times of the same global draw, then the ranks average
their gradients (one all-reduce of the flattened gradients) before the same optimizer
step. Since every loss term is a mean over equal slices, the average of the ranks'
gradients is the gradient of the global batch: N processes compute what one process
computes with the whole batch, up to the order of float sums. Rank 0 validates, writes
checkpoints and reports progress; the others wait for it at a barrier.

``torchrun --nproc-per-node N -m elir_cli tune ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous; :func:`from_environment` joins the process group
(NCCL on CUDA, gloo on CPUs). Ray Train sets the process group up itself
(:mod:`.ray_engine`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from elir_cli.errors import UsageError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise UsageError(f"the batch of {batch_size} does not split evenly over {self.world_size} processes",
                             option="batch_size", value=batch_size,
                             hint=f"choose a {{batch_size}} that is a multiple of {self.world_size}")

    def average_gradients(self, params: Iterable["torch.nn.Parameter"]) -> None:
        """Replace each parameter's gradient by its mean over the ranks (in place)."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: "torch.Tensor") -> float:
        """The mean of a scalar over the ranks."""
        if not self.active:
            return float(value)
        import torch.distributed as dist

        total = value.detach().clone().reshape(1).float()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total) / self.world_size

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def device(self, requested: str) -> str:
        """The device of this rank: ``cuda:LOCAL_RANK`` where CUDA is asked for (or ``auto`` finds it)."""
        if not self.active:
            return requested
        import torch

        if requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return "cpu" if requested == "auto" else requested


def from_environment(device: str = "auto") -> Distributed:
    """The ranks ``torchrun`` started (joining their process group), or one process.

    NCCL when the run is on CUDA (``device`` auto or cuda with a GPU present), gloo otherwise:
    ``--device cpu`` on a machine with a GPU keeps its tensors on the CPU, which NCCL cannot reduce.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device.split(":")[0] in ("auto", "cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Distributed(rank=rank, world_size=world, local_rank=local)


def from_process_group(local_rank: int = 0) -> Distributed:
    """The ranks of a process group someone else set up (Ray Train)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return Distributed()
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)
