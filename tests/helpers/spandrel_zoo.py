"""A state dict for every architecture that spandrel detects: a zoo for detection tests.

:func:`arch_state_dicts` builds, for each architecture in ``spandrel.MAIN_REGISTRY``, an
instance of spandrel's own model class and returns its ``state_dict()`` under the
architecture's id, so a test can run detection code over every kind of checkpoint that
spandrel knows. Where an architecture's module exports several model classes (KBNet's S and
L, RealCUGAN's 2x/3x/4x/2x-fast, PLKSR and RealPLKSR), each class has an entry, so an id can
appear more than once.

The weights are random and the hyper-parameters are chosen small (one block per stage, a
few channels, a 4-pixel window), so the whole zoo builds in about a second on two CPU cores
and holds about 70 MiB, most of it SCUNet (at its least width) and RealCUGAN (one size).
Spandrel reads the hyper-parameters back from the key names and tensor shapes, so a small
instance is still a checkpoint of its architecture: ``MAIN_REGISTRY.load`` accepts it and
names the same architecture (tests/test_spandrel_zoo.py checks this). "Small" stops where a
tensor would have no elements; the comments below give the constraint where it isn't obvious.

Two architectures cannot be made small and are built at their default size on the ``meta``
device (shapes, no storage): GFPGAN, whose ``load`` builds the 512-px network whatever the
state dict says (87M parameters), and LaMa, which has no size parameters (51M). Their state
dicts serve detection, which looks at keys and shapes only; they cannot be loaded.
RealCUGAN has no size parameters either, but is small enough to build on the CPU.

The dicts are cached and shared: treat them as read-only. Give spandrel's ``load`` a copy
(``dict(sd)``), since some architectures' ``load`` renames or deletes keys in place.

:func:`uncovered` names each architecture of the installed spandrel that has no entry here
(new in a later release) or whose model class failed to build, with the reason.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import spandrel
import torch
from torch import nn


@dataclass(frozen=True)
class Spec:
    """One entry of the zoo: a model class of ``spandrel.architectures.<arch>``, by name, and
    the keyword arguments to build it with."""

    arch: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    device: Literal["cpu", "meta"] = "cpu"

    def build(self) -> nn.Module:
        cls = getattr(importlib.import_module(f"spandrel.architectures.{self.arch}"), self.model)
        with torch.device(self.device), warnings.catch_warnings():
            # HAT's relative-position code calls torch.meshgrid without `indexing`.
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            return cls(**self.kwargs)


# In the order of spandrel's MAIN_REGISTRY. Upscalers are built at 2x.
SPECS: tuple[Spec, ...] = (
    Spec("Compact", "Compact", dict(num_feat=8, num_conv=2, upscale=2)),
    Spec("SwiftSRGAN", "SwiftSRGAN", dict(num_channels=8, num_blocks=1, upscale_factor=2)),
    Spec("HAT", "HAT", dict(img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4,
                            squeeze_factor=4, num_feat=8, upscale=2)),
    Spec("GRL", "GRL", dict(img_size=16, embed_dim=12, depths=[1], num_heads_window=[2], num_heads_stripe=[2],
                            window_size=4, stripe_size=[4, 4], upscale=2, upsampler="pixelshuffle")),
    Spec("Swin2SR", "Swin2SR", dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                    upscale=2, upsampler="pixelshuffle")),
    Spec("SwinIR", "SwinIR", dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                  upscale=2, upsampler="pixelshuffle")),
    # spandrel's GFPGAN.load builds the 512-px v1.4 network whatever the state dict says.
    Spec("GFPGAN", "GFPGAN", device="meta"),
    # ch: GroupNorm with 32 groups. Two levels at the default 512 px: no attention level, as load expects.
    Spec("RestoreFormer", "RestoreFormer", dict(n_embed=16, embed_dim=8, ch=32, ch_mult=(1, 1), num_res_blocks=1,
                                                z_channels=32, head_size=2)),
    Spec("LaMa", "LaMa", device="meta"),  # no size parameters
    Spec("OmniSR", "OmniSR", dict(num_feat=8, window_size=4, up_scale=2)),
    # dim: half of it goes to attention with a fixed head size of 32, so 64 is the least with a head.
    Spec("SCUNet", "SCUNet", dict(config=[1] * 7, dim=64, input_resolution=32)),
    # nb=2: a one-block stage collapses to the block itself and its keys lose their index.
    Spec("FBCNN", "FBCNN", dict(nc=[8, 16, 32, 64], nb=2)),
    # img_size: the bottleneck (1/16) must still hold a whole window, or the window shrinks there.
    Spec("Uformer", "Uformer", dict(img_size=64, embed_dim=8, depths=[1] * 9, win_size=4)),
    # embed_dim 32 (RGT, DAT, CRAFT): their positional-bias MLP is embed_dim // 32 wide.
    Spec("RGT", "RGT", dict(img_size=16, embed_dim=32, depth=[1], num_heads=[2], split_size=[4, 4])),
    Spec("DAT", "DAT", dict(img_size=16, embed_dim=32, split_size=[2, 4], depth=[1], num_heads=[2])),
    Spec("CRAFT", "CRAFT", dict(window_size=4, embed_dim=32, depths=[1], num_heads=[2], split_size_0=2,
                                split_size_1=4, upscale=2)),
    Spec("KBNet", "KBNet_s", dict(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1])),
    # dim: each level's width (dim * 2**i) must divide by min(width, 24), a grouped conv's groups.
    Spec("KBNet", "KBNet_l", dict(dim=12, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])),
    Spec("DITN", "DITN", dict(dim=12, ITL_blocks=1, SAL_blocks=1, patch_size=4, upscale=2)),
    Spec("MMRealSR", "MMRealSR", dict(num_in_ch=3, num_out_ch=3, scale=2, num_feat=8, num_block=1, num_grow_ch=4,
                                      num_feats=[8, 8, 8, 8], num_blocks=[1, 1, 1, 1])),
    Spec("SPAN", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)),
    # RealCUGAN has no size parameters: the four classes at their only size.
    Spec("RealCUGAN", "UpCunet2x"),
    Spec("RealCUGAN", "UpCunet3x"),
    Spec("RealCUGAN", "UpCunet4x"),
    Spec("RealCUGAN", "UpCunet2x_fast"),
    Spec("SAFMN", "SAFMN", dict(dim=8, n_blocks=1, upscaling_factor=2)),
    Spec("SAFMNBCIE", "SAFMNBCIE", dict(dim=8, n_blocks=1, num_layers=1)),
    Spec("DCTLSA", "DCTLSA", dict(nf=10, num_modules=1, upscale=2, num_head=2)),
    Spec("FFTformer", "FFTformer", dict(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1)),
    Spec("NAFNet", "NAFNet", dict(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1])),
    # depths=(2,): the last layer of a group has no norm3/sigma, which detection looks for in layer 0.
    Spec("ATD", "ATD", dict(img_size=16, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, category_size=16,
                            num_tokens=8, upscale=2, upsampler="pixelshuffle")),
    Spec("MixDehazeNet", "MixDehazeNet", dict(embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1])),
    Spec("DRUNet", "DRUNet", dict(nc=[8, 16, 32, 64], nb=2)),  # nb=2: as FBCNN
    Spec("DnCNN", "DnCNN", dict(nc=8, nb=4)),  # nb=4: detection looks for layers up to model.8
    # spandrel's load assumes 12 heads: n_feats * patch_dim**2 must divide by 12.
    Spec("IPT", "IPT", dict(patch_size=6, patch_dim=3, n_feats=12, num_heads=12, num_layers=1)),
    Spec("DRCT", "DRCT", dict(img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, gc=4,
                              upscale=2, upsampler="pixelshuffle")),
    Spec("ESRGAN", "ESRGAN", dict(num_filters=8, num_blocks=1, scale=2)),
    Spec("PLKSR", "PLKSR", dict(dim=8, n_blocks=1, upscaling_factor=2, kernel_size=5)),
    Spec("PLKSR", "RealPLKSR", dict(dim=8, n_blocks=1, upscaling_factor=2, kernel_size=5)),
    Spec("RetinexFormer", "RetinexFormer", dict(n_feat=8, stage=1, num_blocks=[1, 1, 1])),
    Spec("HVICIDNet", "HVICIDNet", dict(channels=[8, 8, 16, 32], heads=[1, 1, 2, 4])),
    Spec("SeemoRe", "SeemoRe", dict(scale=2, num_experts=2, num_layers=1, embedding_dim=8)),
    Spec("MoSR", "MoSR", dict(upscale=2, n_block=1, dim=8)),
    Spec("MoESR", "MoESR", dict(scale=2, dim=8, n_blocks=1, n_block=1, upsample_dim=8)),
    Spec("RCAN", "RCAN", dict(scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)),
    Spec("FDAT", "FDAT", dict(scale=2, embed_dim=16, num_groups=1, depth_per_group=1, num_heads=2, window_size=4,
                              mid_dim=8)),
    # 8 self-attention heads, as load assumes; 2x from style_network dim_out / dim_in.
    Spec("AuraSR", "AuraSR", dict(dim=8, image_size=None, input_image_size=None,
                                  style_network=dict(dim_in=8, dim_out=16, depth=1), up_dim_mults=(1, 1, 1, 1, 1),
                                  down_dim_mults=(1, 1, 1), self_attn_dim_head=2, attn_depths=(1, 1, 1, 1, 1),
                                  mid_attn_depth=1)),
)

BUILT_ON_META = frozenset(spec.arch for spec in SPECS if spec.device == "meta")
"""The architectures whose state dicts are meta tensors: for detection, not for loading."""


def _registered() -> list[str]:
    return [str(support.architecture.id) for support in spandrel.MAIN_REGISTRY.architectures()]


@functools.lru_cache(maxsize=None)
def built() -> tuple[tuple[Spec, dict[str, torch.Tensor] | str], ...]:
    """Each spec with its state dict, or with why it failed to build. Cached."""
    out: list[tuple[Spec, dict[str, torch.Tensor] | str]] = []
    for spec in SPECS:
        try:
            out.append((spec, dict(spec.build().state_dict())))
        except Exception as e:  # a spandrel release may change a constructor: reported by uncovered()
            out.append((spec, f"{spec.model}(**{spec.kwargs}): {type(e).__name__}: {e}"))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def arch_state_dicts() -> list[tuple[str, dict[str, torch.Tensor]]]:
    """``(arch id, state dict)`` for the architectures of ``spandrel.MAIN_REGISTRY``: one entry
    per model class that built. Cached; read-only."""
    registered = set(_registered())
    return [(spec.arch, sd) for spec, sd in built() if spec.arch in registered and isinstance(sd, dict)]


def uncovered() -> dict[str, str]:
    """The architectures of ``spandrel.MAIN_REGISTRY`` not fully covered by
    :func:`arch_state_dicts`, each with the reason: no spec here, or a model class of it failed
    to build. Empty when every architecture is covered."""
    failures: dict[str, list[str]] = {}
    for spec, sd in built():
        if isinstance(sd, str):
            failures.setdefault(spec.arch, []).append(sd)
    known = {spec.arch for spec in SPECS}
    out: dict[str, str] = {}
    for arch in _registered():
        if arch not in known:
            out[arch] = "no Spec in tests/helpers/spandrel_zoo.py (new in this spandrel release?)"
        elif arch in failures:
            out[arch] = "; ".join(failures[arch])
    return out
