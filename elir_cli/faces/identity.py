"""IDS: identity drift as the ArcFace angle between restored and ground-truth faces (degrees, lower is better).

As VQFR's ``calculate_cos_dist`` and PMRF compute it: the ArcFace ResNet-18
of ronghuaiyang/arcface-pytorch (``resnet_face18(use_se=False)``, the
``resnet18_110.pth`` those projects use; basicsr's ``ResNetArcFace`` is the
same network) on the grey image (BT.601 weights) resized to 128x128
(bilinear) and mapped to [-1, 1]; the score is arccos of the cosine of the two
512-d embeddings, in degrees. Differences from VQFR's script: the grey image
is taken from the float output (not an 8-bit file), and images closer than
1 degree are not dropped from the mean.

The weights are not downloaded: give the file (``--identity-weights``), a
``.pth`` state dict (read with ``torch.load(weights_only=True)``; a
DataParallel ``module.`` prefix is removed) or a ``.safetensors``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elir_cli.errors import CheckpointError, StateDictMismatchError

if TYPE_CHECKING:
    import torch

INPUT_SIZE = 128
EMBEDDING = 512
LUMA = (0.299, 0.587, 0.114)


def build_arcface():  # type: ignore[no-untyped-def]
    """ResNet-18 for faces (IR blocks, no SE), 1x128x128 grey in [-1, 1] -> 512-d embedding."""
    from torch import nn

    def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)

    class IRBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
            super().__init__()
            self.bn0 = nn.BatchNorm2d(cin)
            self.conv1 = conv3x3(cin, cin)
            self.bn1 = nn.BatchNorm2d(cin)
            self.prelu = nn.PReLU()
            self.conv2 = conv3x3(cin, cout, stride)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
            residual = x if self.downsample is None else self.downsample(x)
            return self.prelu(out + residual)

    class ResNetFace(nn.Module):
        def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2)) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.prelu = nn.PReLU()
            self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
            cin = 64
            for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
                stride = 1 if i == 0 else 2
                down = None
                if stride != 1 or cin != planes:
                    down = nn.Sequential(nn.Conv2d(cin, planes, kernel_size=1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes))
                stage = [IRBlock(cin, planes, stride, down)] + [IRBlock(planes, planes) for _ in range(blocks - 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
                cin = planes
            self.bn4 = nn.BatchNorm2d(512)
            self.dropout = nn.Dropout()
            self.fc5 = nn.Linear(512 * 8 * 8, EMBEDDING)
            self.bn5 = nn.BatchNorm1d(EMBEDDING)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))  # (B,64,64,64)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B,512,8,8)
            x = self.dropout(self.bn4(x)).flatten(1)  # (B,32768)
            return self.bn5(self.fc5(x))  # (B,512)

    return ResNetFace()


def load_state(path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    if not path.is_file():
        raise CheckpointError(f"identity weights {path} not found", hint="give the ArcFace file (resnet18_110.pth)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe or damaged file: refused, never executed
        raise CheckpointError(f"cannot read identity weights {path}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                              hint="give ArcFace's resnet18_110.pth (a state dict of tensors)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"identity weights {path} are not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


class IdentityMetric:
    """ArcFace embeddings of two faces and the angle between them."""

    def __init__(self, weights: Path, device: "torch.device") -> None:
        net = build_arcface()
        state = load_state(weights)
        own = net.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                      if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            raise StateDictMismatchError(missing=missing, unexpected=unexpected, mismatched=mismatched,
                                         source=f"identity weights {weights}")
        net.load_state_dict(state, strict=True)
        self.net = net.eval().to(device)
        self.device = device

    def embed(self, *images: np.ndarray) -> np.ndarray:
        """(N, 512) float64 embeddings of float RGB images, in one forward pass."""
        import cv2
        import torch

        batch = []
        for rgb in images:
            grey = np.clip(rgb, 0.0, 1.0).astype(np.float32) @ np.array(LUMA, dtype=np.float32) * 255.0
            grey = cv2.resize(grey, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
            batch.append((grey - 127.5) / 127.5)
        x = torch.from_numpy(np.stack(batch))[:, None].to(self.device)  # (N,1,128,128)
        with torch.inference_mode():
            return self.net(x).double().cpu().numpy()

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of the two faces' embeddings (1: the same identity to ArcFace)."""
        ea, eb = self.embed(a, b)
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))

    def angle(self, restored: np.ndarray, gt: np.ndarray) -> float:
        """Degrees between the embeddings of ``restored`` and ``gt`` (0: same identity to ArcFace)."""
        a, b = self.embed(restored, gt)
        cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
