"""The Euler sampler of ELIR's flow, stopped early for higher fidelity.

``z <- z + dt * v(z, t)`` on the uniform K-step grid t = 0, 1/K, ..., 1, with t
accumulated by repeated addition as in the authors' code. ``fidelity`` in
[0, 1] stops the flow at t = fidelity: the last step is shortened so that the
path ends exactly there. fidelity 0 returns the start point (the coarse MMSE
estimate), 1 the full flow.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

VelocityField = Callable[[torch.Tensor, float], torch.Tensor]


class StepCallback(Protocol):
    def __call__(self, step: int, total: int, t: float, z: torch.Tensor) -> None: ...


def euler_steps(k_steps: int, fidelity: float = 1.0) -> list[tuple[float, float]]:
    """The (t, dt) pairs the sampler takes for ``k_steps`` stopped at ``fidelity``."""
    if k_steps <= 0:
        raise ValueError(f"k_steps must be positive, got {k_steps}")
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    dt = 1.0 / k_steps
    steps: list[tuple[float, float]] = []
    t = 0.0
    for i in range(k_steps):
        if fidelity >= 1.0:
            steps.append((t, dt))
        else:
            remaining = fidelity - i * dt
            if remaining <= 1e-12:
                break
            steps.append((t, min(dt, remaining)))
        t = t + dt
    return steps


def euler_sample(
    velocity: VelocityField,
    z0: torch.Tensor,
    *,
    k_steps: int,
    fidelity: float = 1.0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate ``dz/dt = velocity(z, t)`` from t = 0 with Euler steps.

    The state keeps ``z0``'s dtype (float32 in ELIR) even when the velocity is
    computed in half precision.
    """
    z = z0
    steps = euler_steps(k_steps, fidelity)
    for i, (t, dt) in enumerate(steps):
        z = z + dt * velocity(z, t).to(z.dtype)
        if callback is not None:
            callback(i + 1, len(steps), t + dt, z)
    return z
