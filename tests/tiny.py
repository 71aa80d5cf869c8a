"""Tiny random ELIR configurations for fast unit tests."""

from __future__ import annotations

import torch

from elir_cli.model.elir import ElirModel
from elir_cli.model.config import ModelConfig

TINY = ModelConfig(k_steps=3, sigma_s=0.1, hid_channels=32, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)


def tiny_model(seed: int = 0, config: ModelConfig = TINY) -> ElirModel:
    torch.manual_seed(seed)
    return ElirModel(config).eval()
