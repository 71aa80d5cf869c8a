"""Make degraded versions of photos with the ELIR paper's bfr degradation.

The authors' synthetic blind-face-restoration degradation (training and
CelebA-Test evaluation), applied to a whole photo of size S (512 here):

1. Gaussian blur, sigma in [0.1, 15], kernel 41x41;
2. downscale to a random size in [1/32, 1.2] x S (bilinear);
3. Gaussian noise, std in [0, 20] (of 255), rounded and clipped;
4. JPEG compression, quality in [30, 100];
5. resize back to S.

Each parameter is drawn from the paper's range with a seeded generator, so the
examples are reproducible. Run from the repository root:

    python examples/degrade.py examples/astronaut.png examples/astronaut_degraded.jpg --seed 3
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

BLUR_SIGMA = (0.1, 15.0)
BLUR_KERNEL = 41
DOWNSCALE = (1 / 32, 1.2)
NOISE_STD = (0.0, 20.0)
JPEG_QUALITY = (30, 100)


@dataclass(frozen=True)
class Degradation:
    sigma: float
    scale: float
    noise: float
    quality: int

    @classmethod
    def draw(cls, rng: np.random.Generator, *, max_sigma: float, min_scale: float) -> "Degradation":
        return cls(sigma=float(rng.uniform(BLUR_SIGMA[0], max_sigma)),
                   scale=float(rng.uniform(min_scale, DOWNSCALE[1])),
                   noise=float(rng.uniform(*NOISE_STD)),
                   quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))


def degrade(rgb: np.ndarray, d: Degradation, rng: np.random.Generator) -> np.ndarray:
    """uint8 HxWx3 -> uint8 HxWx3 of the same size."""
    height, width = rgb.shape[:2]
    x = cv2.GaussianBlur(rgb.astype(np.float32), (BLUR_KERNEL, BLUR_KERNEL), d.sigma)
    small = (max(1, round(width * d.scale)), max(1, round(height * d.scale)))
    x = cv2.resize(x, small, interpolation=cv2.INTER_LINEAR)
    x = np.clip(np.round(x + rng.normal(0.0, d.noise, x.shape)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=d.quality)
    x = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sigma", type=float, default=BLUR_SIGMA[1],
                        help="cap the blur (the paper's range goes to 15)")
    parser.add_argument("--min-scale", type=float, default=DOWNSCALE[0],
                        help="cap the downscaling (the paper's range goes to 1/32)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    d = Degradation.draw(rng, max_sigma=args.max_sigma, min_scale=args.min_scale)
    rgb = np.asarray(Image.open(args.src).convert("RGB"))
    Image.fromarray(degrade(rgb, d, rng)).save(args.dst, quality=95)
    print(f"{args.dst}: blur sigma {d.sigma:.2f}, scale {d.scale:.3f}, noise {d.noise:.1f}, JPEG q{d.quality}")


if __name__ == "__main__":
    main()
