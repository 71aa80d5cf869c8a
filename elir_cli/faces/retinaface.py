"""RetinaFace (Deng et al., CVPR 2020), the network only: backbone, FPN, SSH, heads.

Our own copy, so that detection imports neither facexlib nor torchvision
(torchvision 0.29 imports ``torch._dynamo`` when it is imported: 1.2-3 s of
every face run's start-up). Attribute names equal the checkpoint keys of
facexlib's ``RetinaFace`` (``body.stage1.0.0.weight``, ``fpn.output1.0.weight``,
``ClassHead.0.conv1x1.weight``, ...), so its released ``.pth`` files load with
``strict=True``; ``tests/test_retinaface_parity.py`` checks that this network
gives facexlib's outputs on real photos.

Provenance:

- The MobileNet-0.25 backbone, FPN, SSH and the three heads: facexlib 0.3.0
  ``facexlib/detection/retinaface_net.py`` and ``retinaface.py``
  (github.com/xinntao/facexlib, itself from biubug6/Pytorch_Retinaface),
  MIT licence, reproduced below. Changed: the heads and the forward are
  written without facexlib's per-image state, device and half handling;
  the backbone keeps only the layers RetinaFace reads (what torchvision's
  ``IntermediateLayerGetter`` kept).
- The ResNet-50 backbone (``Bottleneck``, ``resnet50_body``): torchvision 0.29
  ``torchvision/models/resnet.py``, BSD 3-Clause licence, reproduced below.
  Changed: only the layers up to ``layer4`` (no pooling, no classifier), no
  weight initialisation (the weights are always loaded), no options.

facexlib, MIT License, Copyright (c) 2020 Xintao Wang:

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.

torchvision, BSD 3-Clause License, Copyright (c) Soumith Chintala 2016, All rights reserved:

    Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions are met:

    * Redistributions of source code must retain the above copyright notice, this
      list of conditions and the following disclaimer.

    * Redistributions in binary form must reproduce the above copyright notice,
      this list of conditions and the following disclaimer in the documentation
      and/or other materials provided with the distribution.

    * Neither the name of the copyright holder nor the names of its
      contributors may be used to endorse or promote products derived from
      this software without specific prior written permission.

    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
    AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
    IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
    DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
    FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
    DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
    SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
    CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
    OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
    OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
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


# -- building blocks (facexlib retinaface_net.py) ------------------------------------
def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_bn_no_relu(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def conv_bn1x1(inp: int, oup: int, stride: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, stride, padding=0, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BatchNorm and LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields, concatenated."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        if out_channel % 4:
            raise ValueError(f"out_channel must be a multiple of 4, got {out_channel}")
        leaky = 0.1 if out_channel <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2, stride=1)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, stride=1, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channel // 4, out_channel // 4, stride=1)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, stride=1, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_channel // 4, out_channel // 4, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv3x3 = self.conv3X3(x)
        conv5x5_1 = self.conv5X5_1(x)
        conv5x5 = self.conv5X5_2(conv5x5_1)
        conv7x7 = self.conv7x7_3(self.conv7X7_2(conv5x5_1))
        # (B, out/2 + out/4 + out/4, H, W)
        return F.relu(torch.cat([conv3x3, conv5x5, conv7x7], dim=1))


class FPN(nn.Module):
    """Feature pyramid: 1x1 lateral convs, nearest upsampling top-down, 3x3 merges."""

    def __init__(self, in_channels_list: list[int], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels_list[0], out_channels, stride=1, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels_list[1], out_channels, stride=1, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels_list[2], out_channels, stride=1, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        output1 = self.output1(features[0])
        output2 = self.output2(features[1])
        output3 = self.output3(features[2])
        up3 = F.interpolate(output3, size=[output2.size(2), output2.size(3)], mode="nearest")
        output2 = self.merge2(output2 + up3)
        up2 = F.interpolate(output2, size=[output1.size(2), output1.size(3)], mode="nearest")
        output1 = self.merge1(output1 + up2)
        return [output1, output2, output3]


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


def mobilenet_body() -> Backbone:
    """MobileNetV1 at width 0.25 (facexlib's ``MobileNetV1`` without its unused classifier)."""
    stage1 = nn.Sequential(conv_bn(3, 8, 2, leaky=0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                           conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
    stage2 = nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5)))
    stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))
    return Backbone({"stage1": stage1, "stage2": stage2, "stage3": stage3}, ("stage1", "stage2", "stage3"))


class Bottleneck(nn.Module):
    """torchvision's ResNet V1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, stride=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def _resnet_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def resnet50_body() -> Backbone:
    """torchvision's ``resnet50()`` up to ``layer4``; RetinaFace reads layers 2, 3 and 4."""
    layers: dict[str, nn.Module] = {
        "conv1": nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
        "bn1": nn.BatchNorm2d(64),
        "relu": nn.ReLU(inplace=True),
        "maxpool": nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        "layer1": _resnet_layer(64, 64, 3, stride=1),
        "layer2": _resnet_layer(256, 128, 4, stride=2),
        "layer3": _resnet_layer(512, 256, 6, stride=2),
        "layer4": _resnet_layer(1024, 512, 3, stride=2),
    }
    return Backbone(layers, ("layer2", "layer3", "layer4"))


_BODIES = {"mobile0.25": mobilenet_body, "resnet50": resnet50_body}


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d into the Conv2d just before it, for inference (in place; returns ``module``).

    In every block of this file a BatchNorm2d is registered right after the
    convolution whose output it normalises (``conv_bn``, ``Bottleneck``'s
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
