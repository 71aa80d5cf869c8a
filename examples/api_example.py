"""Restore a photo from Python with elir-cli's library API.

    python examples/api_example.py examples/grace_hopper_degraded.jpg restored.png

The first run downloads the bfr weights (about 150 MB) into the Hugging Face
cache; `elir models download bfr` does the same ahead of time.
"""

from __future__ import annotations

import sys

from PIL import Image

import elir_cli


def main(src: str, dst: str) -> None:
    photo = Image.open(src)
    result = elir_cli.restore_image(photo, task="bfr", seed=0)
    for face in result.faces:
        print(f"face {face.index}: box {[round(v) for v in face.box]}, score {face.score:.2f}")
    result.image.save(dst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
