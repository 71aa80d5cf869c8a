"""ELIR: encoder -> coarse MMSE estimate + noise -> Euler flow -> decoder.

Implements the inference path of "Efficient Image Restoration via Latent
Consistency Flow Matching" (Cohen et al., BMVC 2025). The module's attribute
names (``enc``, ``mmse``, ``fmir``, ``dec``) are the released checkpoint's
prefixes, so the authors' weights load with ``strict=True``.

Calling contract (enforced here, once): ``x`` is float (B,3,H,W) in [0,1], any
H and W; it is reflect-padded to ``pad_multiple`` and the output cropped back.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from .autoencoder import Decoder, Encoder
from .coarse_estimator import CoarseEstimator
from .sampler import StepCallback, euler_sample
from .config import ModelConfig
from .placement import aligned
from .vector_field import VectorField

LATENT_FACTOR = 8


class ElirModel(nn.Module):
    """The whole ELIR restorer for one task configuration."""

    # Who runs the four networks: "torch", or "openvino" (openvino_backend.to_openvino,
    # which also sets the precision OpenVINO computes in).
    backend: str = "torch"
    backend_precision: str | None = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Registration order = the released file's order: fmir, mmse, enc, dec.
        self.fmir = VectorField(
            latent_channels=config.latent_channels,
            hid_channels=config.hid_channels,
            n_mid_blocks=config.n_mid_blocks,
            ch_mult=config.ch_mult,
            t_emb_dim=config.t_emb_dim,
        )
        self.mmse = CoarseEstimator(
            channels=config.latent_channels, growth=config.rrdb_c_hid, n_rrdb=config.n_rrdb
        )
        self.enc = Encoder(latent_channels=config.latent_channels)
        self.dec = Decoder(latent_channels=config.latent_channels)
        self.task: str | None = None
        # Autocast dtype for the network (None: float32). The sampler's state
        # and update always stay float32; see runtime.prepare_model.
        self.compute_dtype: torch.dtype | None = None

    # -- stages -----------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def coarse(self, z: torch.Tensor) -> torch.Tensor:
        return self.mmse(z)

    def velocity(self, z: torch.Tensor, t: float) -> torch.Tensor:
        return self.fmir(z, torch.tensor([t], dtype=torch.float32, device=z.device))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def draw_noise(self, latent_shape: torch.Size, generator: torch.Generator | None,
                   device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Unit-normal noise drawn image by image, so a batch equals one-by-one runs."""
        per_image = (1, *latent_shape[1:])
        draws = [torch.randn(per_image, generator=generator, device=generator.device if generator else device,
                             dtype=torch.float32) for _ in range(latent_shape[0])]
        return torch.cat(draws).to(device=device, dtype=dtype)

    # -- whole restorer ----------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        fidelity: float = 1.0,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Restore ``x`` (B,3,H,W) in [0,1]; returns the decoder output, unclamped."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (B,3,H,W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a float tensor in [0,1], got {x.dtype}")
        k_steps = self.config.k_steps if steps is None else int(steps)
        height, width = x.shape[-2:]
        # an aligned input, like the weights (.placement): the bits never depend on an address
        x = aligned(pad_to_multiple(x.float(), self.config.pad_multiple))
        if self.is_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast(x.device):
            z = self.encode(x)
            if noise is None:
                noise = self.draw_noise(z.shape, generator, z.device, torch.float32)
            else:
                noise = _crop_or_check_noise(noise, z)
            z0 = self.coarse(z).float() + self.config.sigma_s * noise
            z1 = euler_sample(self.velocity, z0, k_steps=k_steps, fidelity=fidelity, callback=callback)
            y = self.decode(z1)
        return y[..., :height, :width].float()

    @property
    def precision(self) -> str:
        """The precision the network computes in: ``fp32``, ``bf16`` or ``fp16``."""
        if self.backend_precision is not None:
            return self.backend_precision
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.compute_dtype]

    @property
    def is_channels_last(self) -> bool:
        layers = getattr(self.enc, "layers", None)  # None: not a PyTorch encoder (openvino backend)
        if layers is None:
            return False
        weight = layers[0].weight
        return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    def _autocast(self, device: torch.device) -> "contextlib.AbstractContextManager[object]":
        if self.compute_dtype is None:  # no autocast object at all: older torch lacks one for MPS
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    @torch.inference_mode()
    def restore(
        self,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        fidelity: float = 1.0,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Like :meth:`forward`, clamped to [0,1] and without autograd."""
        y = self.forward(x, noise=noise, generator=generator, steps=steps, fidelity=fidelity,
                         callback=callback)
        return y.clamp_(0.0, 1.0)


def padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right of (B,C,H,W) up to a multiple (replicate where too small)."""
    height, width = x.shape[-2:]
    pad_h = padded_size(height, multiple) - height
    pad_w = padded_size(width, multiple) - width
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _crop_or_check_noise(noise: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Accept noise for the padded latent, or for the unpadded one (then pad it)."""
    if noise.shape == z.shape:
        return noise.to(device=z.device, dtype=torch.float32)
    if noise.ndim == 4 and noise.shape[:2] == z.shape[:2] and \
            noise.shape[2] <= z.shape[2] and noise.shape[3] <= z.shape[3]:
        pad = (0, z.shape[3] - noise.shape[3], 0, z.shape[2] - noise.shape[2])
        return F.pad(noise, pad, mode="constant", value=0.0).to(device=z.device, dtype=torch.float32)
    raise ValueError(f"noise must have the latent's shape {tuple(z.shape)}, got {tuple(noise.shape)}")
