"""The ELIR authors' training objectives, on our :class:`~elir_cli.model.elir.ElirModel`.

Implements the losses of the authors' ``ELIR/training/losses.py`` (eladc-git/ELIR @ 1f37aaf)
that their training configs use (``l2_cfm_mse_loss``, lines 234-283, in all five
``configs/elir_train_*.yaml``) and the two flow-only losses beside it (``fm_loss``, 22-42;
``cfm_loss``, 45-85), from a written specification, not from their code. Each sample has its
own time; the vector field embeds it as their ``pos_emb`` (7-19) does, up to the rounding of
the frequencies (ours: ``exp(-ln(1e4) i / 79)``, theirs: ``exp(i * -(ln(1e4) / 79))``), which
moves gradients by ~1e-4 relative. Notation: ``E``, ``M``, ``v``
are the model's encoder, coarse estimator and vector field; ``E_T``, ``D_T`` the frozen
teacher's encoder and decoder (the authors': the pretrained TAESD3 autoencoder); every
"mean" is over all elements (``F.mse_loss``'s default).

The path from the noisy coarse latent ``z0`` to the clean latent ``z1``::

    x(tau) = (1 - (1 - sigma_min) * tau) * z0 + tau * z1

Randomness is explicit: each loss takes ``noise`` (unit normal, the latent's shape) and
``times`` (one per sample), or draws them from ``generator`` in the authors' order (the
noise first, then the uniforms), so a CPU generator seeded like the authors' global RNG
draws the very numbers their code draws.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from elir_cli.model.autoencoder import Decoder, Encoder

if TYPE_CHECKING:
    from elir_cli.model.elir import ElirModel

# The authors' names (fm_cfg.method) of the objectives implemented here.
FM = "fm_loss"
CFM = "cfm_loss"
L2_CFM_MSE = "l2_cfm_mse_loss"
METHODS = (FM, CFM, L2_CFM_MSE)
# Multiple of the image side the losses take: the encoder divides by 8, the vector field by 4 more.
SIDE_MULTIPLE = 32


@dataclass(frozen=True)
class ObjectiveConfig:
    """The ``fm_cfg`` block of an authors' training config (defaults: losses.py's own).

    ``segments`` is ``fm_cfg.k_steps``: how many consistency segments [0, 1] is cut into
    (not necessarily the sampler's K: sr, denoising and inpainting train with 5, sample with 3).
    """

    segments: int
    sigma_s: float
    method: str = L2_CFM_MSE
    dt: float = 0.05
    alpha: float = 0.001
    beta: float = 0.001
    sigma_min: float = 1e-5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.segments, int) or isinstance(self.segments, bool) or self.segments <= 0:
            raise ValueError(f"segments must be a positive int, got {self.segments!r}")
        if not self.sigma_s >= 0:
            raise ValueError(f"sigma_s must be >= 0, got {self.sigma_s!r}")
        if not 0 <= self.dt < 1:
            raise ValueError(f"dt must be in [0, 1), got {self.dt!r}")
        for name in ("alpha", "sigma_min"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {self.beta!r}")


class Teacher(nn.Module):
    """The frozen autoencoder whose latents the flow learns to reach (``E_T``, ``D_T``).

    Its state-dict keys (``encoder.layers.N...``, ``decoder.layers.N...``) are those of TAESD
    and of diffusers' ``AutoencoderTiny``, so the authors' teacher, TAESD3, loads as it is.
    """

    def __init__(self, *, latent_channels: int = 16) -> None:
        super().__init__()
        self.encoder = Encoder(latent_channels=latent_channels)
        self.decoder = Decoder(latent_channels=latent_channels)
        self.freeze()

    def freeze(self) -> "Teacher":
        """``requires_grad=False`` and eval mode, as the authors' ``trainable: False``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # always frozen: no mode switch can make it train

    @classmethod
    def from_model(cls, model: "ElirModel") -> "Teacher":
        """A frozen copy of ``model``'s encoder and decoder.

        This is the authors' teacher only at the start of their from-scratch training (the
        encoder then starts as TAESD3's); a released model's encoder has been trained since.
        """
        teacher = cls(latent_channels=model.config.latent_channels)
        teacher.encoder = copy.deepcopy(model.enc)
        teacher.decoder = copy.deepcopy(model.dec)
        return teacher.freeze()


@dataclass
class LossTerms:
    """A loss and its parts. ``total`` carries the graph; the parts are detached, for logging.

    ``coarse``: the L2 term of the coarse estimator; ``flow``: the flow-matching or consistency
    term (unweighted); ``pixel``: the decoded-image term (unweighted); absent parts are None.
    """

    total: torch.Tensor
    flow: torch.Tensor
    coarse: torch.Tensor | None = None
    pixel: torch.Tensor | None = None


def draw_noise(latent: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit-normal noise of ``latent``'s shape, drawn at once (as ``torch.randn_like``)."""
    device = generator.device if generator is not None else latent.device
    noise = torch.randn(latent.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(latent.device)


def draw_times(batch: int, *, dt: float, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``(1 - dt) * U[0, 1)``, one per sample, shape (batch,); ``dt=0`` gives the plain uniforms."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand((batch, 1, 1, 1), generator=generator, device=gen_device, dtype=torch.float32)
    return ((1 - dt) * u).reshape(batch).to(device)


def path(z0: torch.Tensor, z1: torch.Tensor, tau: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """``x(tau) = (1 - (1 - sigma_min) tau) z0 + tau z1``; ``tau`` (B,1,1,1)."""
    return (1 - (1 - sigma_min) * tau) * z0 + tau * z1


def segment_ends(t: torch.Tensor, segments: int) -> torch.Tensor:
    """The end of the consistency segment holding each ``t`` (B,1,1,1).

    The grid is ``linspace(0, 1, segments + 1)``; the end is the smallest grid point >= t,
    and the first grid point after 0 when t == 0 (a t on a grid point is its own end).
    """
    grid = torch.linspace(0, 1, segments + 1, device=t.device, dtype=t.dtype)
    index = torch.searchsorted(grid, t, side="left").clamp(min=1)
    return grid[index]


def velocity(model: "ElirModel", z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``v(z, t)`` with one time per sample (``t`` (B,1,1,1) or (B,))."""
    return model.fmir(z, t.reshape(-1))


def consistency_loss(model: "ElirModel", z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor,
                     config: ObjectiveConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The segment-consistency flow term (losses.py: the ``cfm`` part); returns (loss, f0, e).

    One Euler jump from t to the segment end e with gradient, ``f0 = x(t) + (e - t) v(x(t), t)``,
    against, without gradient, the jump from ``r = t + dt`` (``x(r) + (e - r) v(x(r), r)``) where
    r < e, else the path's point ``x(e)``; plus ``alpha`` times the squared difference of the two
    velocities (also where r >= e).
    """
    e = segment_ends(t, config.segments)
    x_e = path(z0, z1, e, config.sigma_min)
    x_t = path(z0, z1, t, config.sigma_min)
    v_t = velocity(model, x_t, t)
    with torch.no_grad():
        r = t + config.dt
        x_r = path(z0, z1, r, config.sigma_min)
        v_r = velocity(model, x_r, r)
    f0 = x_t + (e - t) * v_t
    target = torch.where(r < e, x_r + (e - r) * v_r, x_e)
    loss = F.mse_loss(f0, target) + config.alpha * F.mse_loss(v_t, v_r)
    return loss, f0, e


def coarse_loss(model: "ElirModel", teacher: Teacher, x_hq: torch.Tensor,
                x_lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The coarse estimator's training term: ``mean((E_T(x_hq) - M(E(x_lq)))^2)``.

    Gradient reaches ``M`` and ``E``; the teacher's latent has none. Returns
    (loss, teacher latent of x_hq, coarse latent of x_lq).
    """
    with torch.no_grad():
        z_hq = teacher.encoder(x_hq)
    z_coarse = model.coarse(model.encode(x_lq))
    return F.mse_loss(z_hq, z_coarse), z_hq, z_coarse


def l2_cfm_mse_loss(model: "ElirModel", teacher: Teacher, x_hq: torch.Tensor, x_lq: torch.Tensor,
                    config: ObjectiveConfig, *, noise: torch.Tensor | None = None,
                    times: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> LossTerms:
    """The authors' training objective (all five configs)::

        L = coarse + (1 - beta) * consistency + beta * pixel

    coarse: :func:`coarse_loss`. consistency: :func:`consistency_loss` from
    ``z0 = M(E(x_lq)).detach() + sigma_s * noise`` towards ``E_T(x_hq)``, times in [0, 1 - dt).
    pixel: from the detached jump ``f1 = f0``, one more Euler jump to 1 with gradient,
    ``X1 = f1 + (1 - e) v(f1, e)``, decoded by the teacher's decoder (frozen; the gradient
    passes through it to ``v``): ``mean((x_hq - D_T(X1))^2)``. The model's own decoder is not used.
    """
    _check_images(x_hq, x_lq)
    coarse, z_hq, z_coarse = coarse_loss(model, teacher, x_hq, x_lq)
    noise, t = _draws(z_coarse, config.dt, noise, times, generator)
    z0 = z_coarse.detach() + config.sigma_s * noise
    flow, f0, e = consistency_loss(model, z0, z_hq, t, config)
    f1 = f0.detach()
    x1 = f1 + (1 - e) * velocity(model, f1, e)
    pixel = F.mse_loss(x_hq, teacher.decoder(x1))
    total = coarse + (1 - config.beta) * flow + config.beta * pixel
    return LossTerms(total=total, flow=flow.detach(), coarse=coarse.detach(), pixel=pixel.detach())


def cfm_loss(model: "ElirModel", x_hq: torch.Tensor, x_lq: torch.Tensor, config: ObjectiveConfig, *,
             noise: torch.Tensor | None = None, times: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> LossTerms:
    """The consistency term alone, towards the model's own ``E(x_hq)``; only ``v`` learns.

    ``E`` and ``M`` run without gradient; times in [0, 1 - dt); no teacher.
    """
    _check_images(x_hq, x_lq)
    z_hq, z_coarse = _own_latents(model, x_hq, x_lq)
    noise, t = _draws(z_coarse, config.dt, noise, times, generator)
    z0 = z_coarse + config.sigma_s * noise
    flow, _, _ = consistency_loss(model, z0, z_hq, t, config)
    return LossTerms(total=flow, flow=flow.detach())


def fm_loss(model: "ElirModel", x_hq: torch.Tensor, x_lq: torch.Tensor, config: ObjectiveConfig, *,
            noise: torch.Tensor | None = None, times: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> LossTerms:
    """Plain flow matching towards the model's own ``E(x_hq)``; only ``v`` learns.

    Times in [0, 1) (``dt`` is not used); ``mean((z1 - (1 - sigma_min) z0 - v(x(t), t))^2)``.
    """
    _check_images(x_hq, x_lq)
    z_hq, z_coarse = _own_latents(model, x_hq, x_lq)
    noise, t = _draws(z_coarse, 0.0, noise, times, generator)
    z0 = z_coarse + config.sigma_s * noise
    target = z_hq - (1 - config.sigma_min) * z0
    loss = F.mse_loss(target, velocity(model, path(z0, z_hq, t, config.sigma_min), t))
    return LossTerms(total=loss, flow=loss.detach())


def objective(model: "ElirModel", x_hq: torch.Tensor, x_lq: torch.Tensor, config: ObjectiveConfig, *,
              teacher: Teacher | None = None, noise: torch.Tensor | None = None,
              times: torch.Tensor | None = None, generator: torch.Generator | None = None) -> LossTerms:
    """The loss ``config.method`` names (the authors' ``get_loss``)."""
    if config.method == L2_CFM_MSE:
        if teacher is None:
            raise ValueError(f"teacher is required for {L2_CFM_MSE}")
        return l2_cfm_mse_loss(model, teacher, x_hq, x_lq, config, noise=noise, times=times,
                               generator=generator)
    loss = fm_loss if config.method == FM else cfm_loss
    return loss(model, x_hq, x_lq, config, noise=noise, times=times, generator=generator)


def _own_latents(model: "ElirModel", x_hq: torch.Tensor,
                 x_lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode(x_hq), model.coarse(model.encode(x_lq))


def _draws(latent: torch.Tensor, dt: float, noise: torch.Tensor | None, times: torch.Tensor | None,
           generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise, times (B,1,1,1)): the given ones checked, the missing ones drawn, noise first."""
    batch = latent.shape[0]
    if noise is None:
        noise = draw_noise(latent, generator)
    elif noise.shape != latent.shape:
        raise ValueError(f"noise must have the latent's shape {tuple(latent.shape)}, got {tuple(noise.shape)}")
    if times is None:
        times = draw_times(batch, dt=dt, generator=generator, device=latent.device)
    elif times.numel() != batch or times.ndim not in (1, 4):
        raise ValueError(f"times must have shape ({batch},) or ({batch}, 1, 1, 1), got {tuple(times.shape)}")
    times = times.to(latent.device, torch.float32).reshape(batch, 1, 1, 1)
    return noise.to(device=latent.device, dtype=latent.dtype), times


def _check_images(x_hq: torch.Tensor, x_lq: torch.Tensor) -> None:
    for name, x in (("x_hq", x_hq), ("x_lq", x_lq)):
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"{name} must be a float (B,3,H,W) tensor, got {x.dtype} {tuple(x.shape)}")
        if x.shape[-2] % SIDE_MULTIPLE or x.shape[-1] % SIDE_MULTIPLE:
            raise ValueError(f"{name}'s height and width must be multiples of {SIDE_MULTIPLE}, "
                             f"got {tuple(x.shape[-2:])}")
    if x_hq.shape != x_lq.shape:
        raise ValueError(f"x_hq and x_lq must have the same shape, got {tuple(x_hq.shape)} "
                         f"and {tuple(x_lq.shape)}")
