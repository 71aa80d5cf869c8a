"""The Euler sampler against velocity fields whose flow is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from elir_cli.model.sampler import euler_sample, euler_steps


def test_constant_field_moves_by_exactly_its_velocity() -> None:
    z0 = torch.zeros(2, 4, 3, 3)
    z1 = euler_sample(lambda z, t: torch.full_like(z, 2.0), z0, k_steps=5)
    assert torch.allclose(z1, torch.full_like(z0, 2.0), atol=1e-6)


def test_time_dependent_field_matches_the_riemann_sum() -> None:
    # v = t: Euler gives sum_{i<K} (i/K) / K = (K-1) / (2K), the exact flow 1/2.
    k = 4
    z1 = euler_sample(lambda z, t: torch.full_like(z, t), torch.zeros(1), k_steps=k)
    assert z1.item() == pytest.approx((k - 1) / (2 * k), abs=1e-7)


def test_linear_field_matches_compound_growth() -> None:
    # v = z: Euler gives (1 + 1/K)^K, converging to e.
    z1 = euler_sample(lambda z, t: z, torch.ones(1, dtype=torch.float64), k_steps=10)
    assert z1.item() == pytest.approx((1 + 1 / 10) ** 10, rel=1e-12)
    assert abs(z1.item() - math.e) < 0.13


def test_fidelity_stops_on_the_same_grid() -> None:
    assert euler_steps(4, 1.0) == [(0.0, 0.25), (0.25, 0.25), (0.5, 0.25), (0.75, 0.25)]
    assert euler_steps(4, 0.0) == []
    assert euler_steps(4, 0.5) == [(0.0, 0.25), (0.25, 0.25)]
    steps = euler_steps(4, 0.6)
    assert [t for t, _ in steps] == [0.0, 0.25, 0.5]
    assert sum(dt for _, dt in steps) == pytest.approx(0.6)
    z = euler_sample(lambda z, t: torch.ones_like(z), torch.zeros(1), k_steps=4, fidelity=0.6)
    assert z.item() == pytest.approx(0.6, abs=1e-7)


def test_time_accumulates_by_repeated_addition() -> None:
    seen: list[float] = []
    euler_sample(lambda z, t: seen.append(t) or torch.zeros_like(z), torch.zeros(1), k_steps=3)
    assert seen == [0.0, 1 / 3, 1 / 3 + 1 / 3]


def test_callback_reports_progress() -> None:
    calls: list[tuple[int, int]] = []
    euler_sample(lambda z, t: z, torch.ones(1), k_steps=3, callback=lambda i, n, t, z: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("bad", [{"k_steps": 0}, {"k_steps": 2, "fidelity": 1.5}, {"k_steps": 2, "fidelity": -0.1}])
def test_bad_arguments_name_themselves(bad: dict) -> None:
    with pytest.raises(ValueError, match="k_steps|fidelity"):
        euler_steps(**bad)
