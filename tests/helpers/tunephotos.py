"""Real photos for the ``elir tune`` tests: the four corners of each portrait of ``tests/data/photos/faces``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import DATA
from tests.helpers.cli_helpers import tiny_weights

FACES = DATA / "photos" / "faces"
PORTRAITS = ("astronaut.png", "camera.png", "grace_hopper.jpg")
CORNER = 256
TASK = "denoising"  # the tune tests' task: the smallest input (256), no face detection


def corner_photos(folder: Path, *, corner: int = CORNER, names: tuple[str, ...] = PORTRAITS) -> Path:
    """The four ``corner`` x ``corner`` corners of each real portrait, as PNGs in ``folder`` (12 by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = Image.open(FACES / name).convert("RGB")
        width, height = image.size
        corners = [(0, 0), (width - corner, 0), (0, height - corner), (width - corner, height - corner)]
        for i, (x, y) in enumerate(corners):
            image.crop((x, y, x + corner, y + corner)).save(folder / f"{Path(name).stem}_{i}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's training photos: the 12 corners of the portraits."""
    return corner_photos(tmp_path_factory.mktemp("photos") / "hq")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's starting weights: a tiny random model of :data:`TASK`."""
    return tiny_weights(tmp_path_factory.mktemp("weights"), TASK)
