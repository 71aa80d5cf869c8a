"""RetinaFace (Deng et al., CVPR 2020), the network only: backbone, FPN, SSH, heads.

Written here, keyed to facexlib's released RetinaFace checkpoints, so that
detection imports neither facexlib nor torchvision (torchvision 0.29 imports
``torch._dynamo`` when it is imported: 1.2-3 s of every face run's
start-up). facexlib stays the source of the network's definition and weights
(the product detects and aligns "with facexlib"); what this file takes from
it are facts, not code:

- the checkpoint keys, which fix the attribute names and the order of the
  layers inside each ``nn.Sequential`` (``body.stage1.0.0.weight``,
  ``fpn.output1.0.weight``, ``ssh1.conv5X5_1.1.running_mean``,
  ``ClassHead.0.conv1x1.weight``, ``body.layer2.0.downsample.1.weight``, ...);
- the architecture those keys describe: MobileNetV1 at width 0.25 (three
  stages, depthwise-separable blocks, LeakyReLU 0.1) or ResNet-50 (v1.5
  bottlenecks, the body torchvision's ``IntermediateLayerGetter`` returned:
  layers 2-4), a three-level FPN with nearest upsampling, one SSH context
  module per level (LeakyReLU 0.1 when the width is at most 64, else ReLU),
  and 1x1 heads with two anchors per pixel;
- the anchor configurations ``cfg_mnet`` / ``cfg_re50`` (facexlib 0.3.0,
  ``facexlib/detection/__init__.py``; itself from biubug6/Pytorch_Retinaface).

``tests/test_retinaface_parity.py`` holds it to that: the same keys and
shapes as facexlib's ``RetinaFace`` for both backbones, the same outputs on
real photos with the released MobileNet weights (and on random weights for
ResNet-50), and the same detections as facexlib's decoding with
torchvision's NMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RetinaFaceConfig:
    """What the network and its anchors need (facexlib's ``cfg_mnet`` / ``cfg_re50``)."""

    name: str
    min_sizes: tuple[tuple[int, ...], ...]  # anchor sizes (px) per pyramid level
    steps: tuple[int, ...]  # stride (px) of each pyramid level
    variance: tuple[float, float]  # box-encoding variances (centre, size)
    in_channel: int  # backbone width; the three levels have 2x, 4x, 8x this
    out_channel: int  # FPN / SSH width


_ANCHORS = dict(min_sizes=((16, 32), (64, 128), (256, 512)), steps=(8, 16, 32), variance=(0.1, 0.2))
CONFIGS = {
    "mobile0.25": RetinaFaceConfig(name="mobilenet0.25", in_channel=32, out_channel=64, **_ANCHORS),
    "resnet50": RetinaFaceConfig(name="Resnet50", in_channel=256, out_channel=256, **_ANCHORS),
}
N_ANCHORS = 2  # anchors per pixel per level (len of each min_sizes entry)


# -- building blocks ----------------------------------------------------------------------
def conv_norm(inp: int, out: int, kernel: int = 3, stride: int = 1, *, groups: int = 1,
              slope: float | None = None) -> list[nn.Module]:
    """A convolution ("same" padding, no bias), its BatchNorm, then LeakyReLU(``slope``) unless None.

    Returned as a list, so a block can chain several into one ``nn.Sequential``
    whose indices are the checkpoint's (conv 0, norm 1, activation 2, ...).
    """
    layers: list[nn.Module] = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(out)]
    if slope is not None:
        layers.append(nn.LeakyReLU(negative_slope=slope, inplace=True))
    return layers


MOBILENET_SLOPE = 0.1


def separable(inp: int, out: int, stride: int) -> nn.Sequential:
    """MobileNetV1's block: a depthwise 3x3 (carrying the stride), then a pointwise 1x1."""
    return nn.Sequential(*conv_norm(inp, inp, 3, stride, groups=inp, slope=MOBILENET_SLOPE),
                         *conv_norm(inp, out, 1, slope=MOBILENET_SLOPE))


def context_slope(width: int) -> float:
    """The FPN's and SSH's activation: LeakyReLU 0.1 for the narrow (MobileNet) network, ReLU otherwise."""
    return 0.1 if width <= 64 else 0.0


class SSH(nn.Module):
    """The context module: three branches seeing 3x3, 5x5 and 7x7, concatenated, then ReLU.

    The 5x5 and 7x7 branches share their first 3x3 (``conv5X5_1``); the
    7x7 branch stacks two more. Branch widths: half, quarter, quarter.
    """

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        if out_channel % 4:
            raise ValueError(f"out_channel must be a multiple of 4, got {out_channel}")
        half, quarter, slope = out_channel // 2, out_channel // 4, context_slope(out_channel)
        # name: (in, out, activation); the names are the checkpoint's, capitals included
        layers = {"conv3X3": (in_channel, half, None), "conv5X5_1": (in_channel, quarter, slope),
                  "conv5X5_2": (quarter, quarter, None), "conv7X7_2": (quarter, quarter, slope),
                  "conv7x7_3": (quarter, quarter, None)}
        for name, (inp, out, act) in layers.items():
            self.add_module(name, nn.Sequential(*conv_norm(inp, out, 3, slope=act)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.conv5X5_1(x)
        branches = [self.conv3X3(x), self.conv5X5_2(shared), self.conv7x7_3(self.conv7X7_2(shared))]
        return F.relu(torch.cat(branches, dim=1))  # (B, half + quarter + quarter, H, W)


class FPN(nn.Module):
    """Feature pyramid over three levels: 1x1 laterals, then top-down, each finer level gets the
    coarser one upsampled (nearest) added and a 3x3 merge."""

    def __init__(self, in_channels_list: list[int], out_channels: int) -> None:
        super().__init__()
        slope = context_slope(out_channels)
        for level, channels in enumerate(in_channels_list, start=1):
            self.add_module(f"output{level}", nn.Sequential(*conv_norm(channels, out_channels, 1, slope=slope)))
        for level in range(1, len(in_channels_list)):
            self.add_module(f"merge{level}", nn.Sequential(*conv_norm(out_channels, out_channels, 3, slope=slope)))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [getattr(self, f"output{i}")(f) for i, f in enumerate(features, start=1)]
        for i in reversed(range(len(levels) - 1)):  # from the second-coarsest level down to the finest
            coarser = F.interpolate(levels[i + 1], size=list(levels[i].shape[-2:]), mode="nearest")
            levels[i] = getattr(self, f"merge{i + 1}")(levels[i] + coarser)
        return levels


class Head(nn.Module):
    """A 1x1 conv predicting ``per_anchor`` numbers for each anchor: (B, H*W*anchors, per_anchor)."""

    def __init__(self, in_channels: int, per_anchor: int, num_anchors: int = N_ANCHORS) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(in_channels, num_anchors * per_anchor, kernel_size=(1, 1), stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()  # (B, H, W, anchors*per_anchor)
        return out.view(out.shape[0], -1, self.per_anchor)


def heads(in_channels: int, per_anchor: int, levels: int = 3) -> nn.ModuleList:
    return nn.ModuleList(Head(in_channels, per_anchor) for _ in range(levels))


# -- backbones -------------------------------------------------------------------------
class Backbone(nn.ModuleDict):
    """The backbone's layers up to the last one read, run in order; returns the
    outputs of ``returned`` (what torchvision's ``IntermediateLayerGetter`` did,
    with the same child names, hence the same checkpoint keys)."""

    def __init__(self, layers: dict[str, nn.Module], returned: tuple[str, ...]) -> None:
        super().__init__(layers)
        self.returned = returned

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for name, module in self.items():
            x = module(x)
            if name in self.returned:
                out.append(x)
        return out


# MobileNetV1 at width 0.25, as (in, out, stride) per separable block, after a plain 3x3 stem.
MOBILENET_STAGES = (
    ((8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)),
    ((64, 128, 2),) + ((128, 128, 1),) * 5,
    ((128, 256, 2), (256, 256, 1)),
)


def mobilenet_body() -> Backbone:
    """MobileNetV1 at width 0.25, its three stages (no classifier); RetinaFace reads each stage."""
    stem = nn.Sequential(*conv_norm(3, 8, 3, 2, slope=MOBILENET_SLOPE))
    stages = [[stem] if i == 0 else [] for i in range(len(MOBILENET_STAGES))]
    for stage, rows in zip(stages, MOBILENET_STAGES):
        stage.extend(separable(inp, out, stride) for inp, out, stride in rows)
    names = tuple(f"stage{i}" for i in range(1, len(stages) + 1))
    return Backbone({name: nn.Sequential(*stage) for name, stage in zip(names, stages)}, names)


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck, v1.5 (the stride is on the 3x3): 1x1 to ``width``, 3x3, 1x1 to 4x ``width``,
    added to the shortcut (a strided 1x1 projection where the shape changes), then ReLU."""

    EXPANSION = 4

    def __init__(self, inp: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.EXPANSION
        # each conv registered just before its norm (fuse_batchnorm folds such pairs)
        for i, (a, b, kernel, step) in enumerate(((inp, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)),
                                                 start=1):
            self.add_module(f"conv{i}", nn.Conv2d(a, b, kernel, step, kernel // 2, bias=False))
            self.add_module(f"bn{i}", nn.BatchNorm2d(b))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or inp != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


# ResNet-50 after its stem, as (width, blocks, stride) per layer.
RESNET50_LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def resnet50_body() -> Backbone:
    """ResNet-50 up to ``layer4`` (no pooling, no classifier); RetinaFace reads layers 2, 3 and 4."""
    layers: dict[str, nn.Module] = {
        "conv1": nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
        "bn1": nn.BatchNorm2d(64),
        "relu": nn.ReLU(inplace=True),
        "maxpool": nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    }
    inp = 64
    for i, (width, blocks, stride) in enumerate(RESNET50_LAYERS, start=1):
        first = Bottleneck(inp, width, stride)
        inp = width * Bottleneck.EXPANSION
        layers[f"layer{i}"] = nn.Sequential(first, *(Bottleneck(inp, width) for _ in range(blocks - 1)))
    return Backbone(layers, ("layer2", "layer3", "layer4"))


_BODIES = {"mobile0.25": mobilenet_body, "resnet50": resnet50_body}


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d into the Conv2d just before it, for inference (in place; returns ``module``).

    In every block of this file a BatchNorm2d is registered right after the
    convolution whose output it normalises (``conv_norm``, ``Bottleneck``'s
    conv1/bn1..., the ResNet stem), so a (Conv2d, BatchNorm2d) pair of
    consecutive children is one conv followed by its norm: the pair becomes
    the folded conv and an identity. Outputs equal the unfused network's up to
    float rounding; a 290 px crop is detected about 10 % faster.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    children = list(module.named_children())
    for (name, child), (next_name, next_child) in zip(children, children[1:]):
        if isinstance(child, nn.Conv2d) and isinstance(next_child, nn.BatchNorm2d):
            setattr(module, name, fuse_conv_bn_eval(child, next_child))
            setattr(module, next_name, nn.Identity())
    for child in module.children():
        fuse_batchnorm(child)
    return module


# -- the detector network ---------------------------------------------------------------
class RetinaFace(nn.Module):
    """RetinaFace for inference: BGR minus the training mean in, per-anchor predictions out.

    ``forward(x)``, x (B,3,H,W) float, returns ``(loc, conf, landmarks)``:
    (B,A,4) box offsets, (B,A,2) softmax scores (background, face), (B,A,10)
    landmark offsets, for the A anchors of :func:`elir_cli.faces.detection.prior_boxes`.
    """

    def __init__(self, *, network: str = "mobile0.25") -> None:
        super().__init__()
        if network not in CONFIGS:
            raise ValueError(f"network must be one of {', '.join(CONFIGS)}, got {network!r}")
        self.cfg = cfg = CONFIGS[network]
        self.body = _BODIES[network]()
        in_channels = [cfg.in_channel * 2, cfg.in_channel * 4, cfg.in_channel * 8]
        self.fpn = FPN(in_channels, cfg.out_channel)
        self.ssh1 = SSH(cfg.out_channel, cfg.out_channel)
        self.ssh2 = SSH(cfg.out_channel, cfg.out_channel)
        self.ssh3 = SSH(cfg.out_channel, cfg.out_channel)
        self.ClassHead = heads(cfg.out_channel, 2)
        self.BboxHead = heads(cfg.out_channel, 4)
        self.LandmarkHead = heads(cfg.out_channel, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        # each head (B, H_l*W_l*anchors, n); concatenated over the levels
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return loc, F.softmax(conf, dim=-1), landmarks
