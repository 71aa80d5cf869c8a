"""Make tests/data/photos/awkward/hopper_12bit.jpg: a real 12-bit (extended sequential) JPEG.

Pillow and OpenCV decode only 8-bit JPEGs; medical and some camera workflows
write 12-bit ones. libjpeg-turbo 3 encodes them, and the ``imagecodecs``
package on PyPI ships it (not a dependency of elir-cli: run this with
``pip install imagecodecs`` in a scratch environment).

    python tools/make_12bit_jpeg.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "photos" / "faces" / "grace_hopper.jpg"
TARGET = ROOT / "tests" / "data" / "photos" / "awkward" / "hopper_12bit.jpg"
SIZE = (64, 80)  # small: the file only has to be what it is
TWELVE_BIT_SCALE = 16  # 8-bit samples to 12-bit: 255 * 16 = 4080 of 4095
QUALITY = 90


def main() -> None:
    import imagecodecs

    rgb = np.asarray(Image.open(SOURCE).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS))
    data = imagecodecs.jpeg8_encode(rgb.astype(np.uint16) * TWELVE_BIT_SCALE, level=QUALITY, bitspersample=12)
    assert imagecodecs.jpeg8_decode(data).max() > 255  # really 12 bits
    TARGET.write_bytes(data)
    print(f"wrote {TARGET} ({len(data)} bytes) with imagecodecs {imagecodecs.__version__}")


if __name__ == "__main__":
    main()
