"""Tiny random ELIR configurations for fast unit tests."""

from __future__ import annotations

import torch

from elir_cli.model.elir import ElirModel
from elir_cli.model.config import ModelConfig

TINY = ModelConfig(k_steps=3, sigma_s=0.1, hid_channels=32, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)


def tiny_model(seed: int = 0, config: ModelConfig = TINY) -> ElirModel:
    torch.manual_seed(seed)
    return ElirModel(config).eval()


# Added to, then taken out of, the activations of one decoder block: fp32 (ulp ~6e-5 at
# 1000) carries the detail through, bf16 (ulp 4 at 1000) rounds it away.
FRAGILE_OFFSET = 1000.0


def bf16_fragile_model(seed: int = 0, config: ModelConfig = TINY) -> ElirModel:
    """A tiny ELIR whose output bf16 cannot reproduce: the same function in exact arithmetic
    as a model with a large offset added by one conv and cancelled by the next."""
    model = tiny_model(seed, config)
    block = model.dec.layers[-2]  # the last Block: conv.0 -> ReLU -> conv.2 -> ReLU -> conv.4 (+x)
    with torch.no_grad():
        block.conv[0].bias += FRAGILE_OFFSET  # ReLU(conv0 + 1000) = conv0 + 1000 for these weights
        block.conv[2].bias -= FRAGILE_OFFSET * block.conv[2].weight.sum(dim=(1, 2, 3))
    return model
