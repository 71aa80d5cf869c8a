"""The model's calling contract: shapes, padding, noise, seeds, batches, fidelity."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tiny import TINY, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("hw", [(64, 96), (50, 70), (33, 17), (8, 8)])
def test_any_size_comes_back_the_same_size(model, hw: tuple[int, int]) -> None:
    x = torch.rand(1, 3, *hw)
    y = model.restore(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_forward_is_unclamped_and_restore_clamps(model) -> None:
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        raw = model(x, generator=torch.Generator().manual_seed(3))
    clamped = model.restore(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(clamped, raw.clamp(0, 1))
    assert raw.min() < 0 or raw.max() > 1  # random weights overshoot: the test would notice a clamp


def test_seeded_generator_is_bit_identical(model) -> None:
    x = torch.rand(2, 3, 32, 64)
    a = model.restore(x, generator=torch.Generator().manual_seed(11))
    b = model.restore(x, generator=torch.Generator().manual_seed(11))
    c = model.restore(x, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unseeded_runs_draw_fresh_noise(model) -> None:
    x = torch.rand(1, 3, 32, 32)
    assert not torch.equal(model.restore(x), model.restore(x))


def test_batch_equals_one_by_one(model) -> None:
    x = torch.rand(3, 3, 32, 64)
    batch = model.restore(x, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    singles = torch.cat([model.restore(x[i:i + 1], generator=g) for i in range(3)])
    assert (batch - singles).abs().max().item() < 1e-5


def test_noise_is_scaled_by_sigma(model) -> None:
    x = torch.rand(1, 3, 32, 32)
    zeros = torch.zeros(1, TINY.latent_channels, 4, 4)
    with torch.no_grad():
        z0 = model.coarse(model.encode(x))
        expected = model.decode(z0 + 0.0)  # fidelity 0: the coarse estimate, decoded
        got = model(x, noise=zeros, fidelity=0.0)
        ones = torch.ones_like(zeros)
        shifted = model(x, noise=ones, fidelity=0.0)
        want_shift = model.decode(z0 + TINY.sigma_s * ones)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(shifted, want_shift, atol=1e-6)


def test_fidelity_interpolates_between_coarse_and_full(model) -> None:
    x = torch.rand(1, 3, 32, 32)
    noise = torch.randn(1, TINY.latent_channels, 4, 4)
    with torch.no_grad():
        full = model(x, noise=noise, fidelity=1.0)
        default = model(x, noise=noise)
        half = model(x, noise=noise, fidelity=0.5)
        coarse = model(x, noise=noise, fidelity=0.0)
    assert torch.equal(full, default)
    assert not torch.allclose(half, full) and not torch.allclose(half, coarse)


def test_steps_override_k(model) -> None:
    x = torch.rand(1, 3, 32, 32)
    noise = torch.randn(1, TINY.latent_channels, 4, 4)
    seen: list[int] = []
    with torch.no_grad():
        model(x, noise=noise, steps=7, callback=lambda i, n, t, z: seen.append(n))
    assert seen == [7] * 7


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.rand(1, 4, 32, 32), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)])
def test_bad_input_is_named(model, bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="x must"):
        model(bad)


@pytest.mark.parametrize("hw", [(4, 6), (7, 5), (16, 16)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_upsample_conv_equals_upsample_then_conv(hw: tuple[int, int], channels_last: bool) -> None:
    from torch.nn import functional as F

    from elir_cli.model.autoencoder import upsample_conv

    x = torch.randn(2, 8, *hw)
    w = torch.randn(5, 8, 3, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    plain = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    fused = upsample_conv(x, w)
    assert fused.shape == plain.shape
    assert (fused - plain).abs().max().item() < 1e-4
