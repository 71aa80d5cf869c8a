"""The hyper-parameters of one ELIR model, validated.

Pure data: no torch, so the task registry (and ``elir models list``) can read
it without importing the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one ELIR model (see the paper and the format README)."""

    k_steps: int
    sigma_s: float
    hid_channels: int
    n_mid_blocks: int
    latent_channels: int = 16
    rrdb_c_hid: int = 96
    n_rrdb: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 1, 2)
    t_emb_dim: int = 160
    pad_multiple: int = 32

    def __post_init__(self) -> None:
        for name in ("k_steps", "hid_channels", "n_mid_blocks", "latent_channels",
                     "rrdb_c_hid", "n_rrdb", "t_emb_dim", "pad_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.sigma_s >= 0:
            raise ValueError(f"sigma_s must be >= 0, got {self.sigma_s!r}")
        if self.pad_multiple % 32:
            raise ValueError(f"pad_multiple must be a multiple of 32, got {self.pad_multiple}")
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if any(m not in (1, 2) for m in self.ch_mult):
            raise ValueError(f"ch_mult entries must be 1 or 2, got {self.ch_mult}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)
