"""Training and validation images for ``elir tune``: pairs, crops, flips, LQ made on the fly.

Folders are local paths or URLs (``s3://``, ``gs://``, any pyarrow file system: the folders
``elir batch --engine ray`` reads, :mod:`elir_cli.distributed.storage`). Images are found by
content, recursively, sorted; an LQ folder pairs with the HQ folder by relative path without
the extension, as ``elir eval`` pairs them.

Geometry. Face tasks (bfr, sr, denoising, inpainting) train, as the authors do, on whole
aligned faces: each HQ image is centre-cropped to a square and resized (PIL bicubic) to
``size`` x ``size``, augmented by a horizontal flip (p = 0.5) only. Whole-image tasks (bsr)
train on random ``size`` x ``size`` crops, flipped likewise. An LQ image given in ``--lq``
has the HQ's size, or the HQ's divided by the task's scale (then it is upsampled as the
pipeline does: nearest-exact for sr, bicubic otherwise) and is cropped and flipped with it.

LQ made on the fly (no ``--lq``): the task's degradation of ``elir degrade``
(:mod:`elir_cli.evaluation.degrade`; bfr uses bfr-synthetic), applied to the flipped crop,
with a fresh draw each epoch. bsr has none there: it needs ``--lq``.

Determinism. Nothing here carries state from one batch to the next: the order of epoch
``e`` is a permutation seeded by (seed, e); sample ``key`` in epoch ``e`` draws its crop,
flip and degradation from a generator seeded by (seed, e, key); the validation LQ by
(seed, key). So the batch of any step is a function of the step alone: a resumed run reads
exactly the data an uninterrupted one reads, and ranks of a distributed run each take their
slice of the same global batch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from elir_cli.errors import UsageError
from elir_cli.registry.tasks import Task

if TYPE_CHECKING:
    import torch

MIN_TRAIN_IMAGES = 8
VAL_FRACTION = 0.1  # held out of --hq when no --val is given
MAX_HELD_OUT = 32
CACHE_BYTES = 4 * 1024 ** 3  # decoded whole images kept in memory (crop mode)
FLIP_P = 0.5
MAX_8BIT = 255.0
# elir degrade's degradation of each task; bsr's (Real-ESRGAN's) is not there.
DEGRADATION_OF = {"sr": "sr", "denoising": "denoising", "inpainting": "inpainting", "bfr": "bfr-synthetic"}


def derived_seed(*parts: object) -> int:
    """A 64-bit seed from the parts (sha256 of their text): stable across runs, machines and ranks."""
    text = "\0".join(["elir-tune", *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- folders


class ImageFolder:
    """The images under a local folder or a folder URL, by relative path."""

    def __init__(self, location: str, *, what: str) -> None:
        self.location = location
        self.what = what
        from elir_cli.distributed.cluster import is_url

        if is_url(location):
            from elir_cli.distributed.storage import list_images, open_folder

            self._remote = open_folder(location)
            self.names = list_images(self._remote)
        else:
            from elir_cli.evaluation.images import walk_images

            root = Path(location)
            if not root.is_dir():
                raise UsageError(f"{what} {location} is not a folder", hint="give a folder of images")
            self._remote = None
            self._root = root
            self.names = [p.relative_to(root).as_posix() for p in walk_images(root)]
        if not self.names:
            raise UsageError(f"no images found in {what} {location}")

    def read(self, name: str) -> np.ndarray:
        """One image as uint8 HxWx3 RGB (EXIF rotation applied, grey and CMYK made RGB)."""
        from elir_cli.images.read import read_image, to_uint8

        if self._remote is None:
            return to_uint8(read_image(self._root / name).rgb)
        from elir_cli.distributed.storage import read_bytes

        image = read_image(read_bytes(self._remote, name))
        return to_uint8(image.rgb)

    def keys(self) -> dict[str, str]:
        """Pairing key (relative path without the extension) -> name; two files with one key are refused."""
        found: dict[str, str] = {}
        for name in self.names:
            key = str(Path(name).with_suffix("").as_posix())
            if key in found:
                raise UsageError(f"{self.what}: {found[key]} and {name} have the same name but for the extension",
                                 hint="images are paired by name; rename one of them")
            found[key] = name
        return found


@dataclass(frozen=True)
class Item:
    """One image of a set: its key, its HQ file and (paired data) its LQ file."""

    key: str
    hq: str
    lq: str | None = None


def pair(hq: ImageFolder, lq: ImageFolder | None) -> list[Item]:
    """The items of ``hq`` (with their ``lq`` files, where given), sorted by key."""
    hq_keys = hq.keys()
    if lq is None:
        return [Item(k, n) for k, n in sorted(hq_keys.items())]
    lq_keys = lq.keys()
    absent = sorted(k for k in hq_keys if k not in lq_keys)
    if absent:
        raise UsageError(f"{len(absent)} of {len(hq_keys)} images of {hq.what} have no file of the same name in "
                         f"{lq.what} (first: {absent[0]})", hint="the folders pair by file name, without the extension")
    return [Item(k, n, lq_keys[k]) for k, n in sorted(hq_keys.items())]


def split_held_out(items: list[Item], seed: int) -> tuple[list[Item], list[Item]]:
    """(train, validation): a seeded tenth (1 to 32 images) held out for validation."""
    count = min(MAX_HELD_OUT, max(1, round(VAL_FRACTION * len(items))))
    order = np.random.default_rng(derived_seed(seed, "held-out")).permutation(len(items))
    held = set(order[:count].tolist())
    return ([it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held])


# --------------------------------------------------------------------------- geometry


def is_face_task(task: Task) -> bool:
    return task.kind == "face"


def center_square(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top:top + side, left:left + side]


def resize_to(rgb: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), method))


class Geometry:
    """How one task's images become training pairs of ``size`` x ``size``."""

    def __init__(self, task: Task, size: int) -> None:
        self.task = task
        self.size = size
        self.whole = is_face_task(task)  # whole aligned faces, resized; else random crops

    def check_hq(self, name: str, rgb: np.ndarray) -> str | None:
        """Why this HQ image cannot be used (too small), or None."""
        height, width = rgb.shape[:2]
        if min(height, width) < self.size:
            return f"{name} is {width}x{height}, smaller than --size {self.size}"
        return None

    def fit_lq(self, name: str, hq: np.ndarray, lq: np.ndarray) -> np.ndarray:
        """The LQ image at the HQ's size (upsampled when it is smaller by the task's scale)."""
        height, width = hq.shape[:2]
        lq_h, lq_w = lq.shape[:2]
        if (lq_h, lq_w) == (height, width):
            return lq
        scale = self.task.scale
        if scale > 1 and (lq_h * scale, lq_w * scale) == (height, width):
            return resize_to(lq, width, height, nearest=self.task.name == "sr")
        want = f"{width}x{height}" + (f" or {width // scale}x{height // scale}" if scale > 1 else "")
        raise UsageError(f"LQ image {name} is {lq_w}x{lq_h}; its HQ image is {width}x{height} (expected {want})",
                         hint="an LQ image must have its HQ image's size" + (
                             f", or 1/{scale} of it" if scale > 1 else ""))

    def prepare(self, hq: np.ndarray, lq: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Whole-face tasks: the centred square at ``size``; crop tasks: unchanged."""
        if not self.whole:
            return hq, lq
        s = self.size
        hq = resize_to(center_square(hq), s, s)
        return hq, (resize_to(center_square(lq), s, s) if lq is not None else None)

    def crop(self, hq: np.ndarray, lq: np.ndarray | None, rng: np.random.Generator | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """A ``size`` crop: random with ``rng``, else centred (validation)."""
        height, width = hq.shape[:2]
        s = self.size
        if (height, width) == (s, s):
            return hq, lq
        if rng is None:
            top, left = (height - s) // 2, (width - s) // 2
        else:
            top, left = int(rng.integers(0, height - s + 1)), int(rng.integers(0, width - s + 1))
        return hq[top:top + s, left:left + s], (lq[top:top + s, left:left + s] if lq is not None else None)


# --------------------------------------------------------------------------- the sets


class _ImageCache:
    """Prepared images by key, up to a byte budget (least recently used out first)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: tuple[np.ndarray, np.ndarray | None]) -> None:
        size = value[0].nbytes + (value[1].nbytes if value[1] is not None else 0)
        if size > self.budget:
            return
        while self.used + size > self.budget and self._items:
            _, old = self._items.popitem(last=False)
            self.used -= old[0].nbytes + (old[1].nbytes if old[1] is not None else 0)
        self._items[key] = value
        self.used += size


class PairSource:
    """Reads an item's HQ (and LQ) image, checks and prepares them, and keeps them in memory."""

    def __init__(self, hq: ImageFolder, lq: ImageFolder | None, geometry: Geometry, *,
                 cache_bytes: int = CACHE_BYTES) -> None:
        self.hq, self.lq, self.geometry = hq, lq, geometry
        self._cache = _ImageCache(cache_bytes)

    def load(self, item: Item) -> tuple[np.ndarray, np.ndarray | None]:
        cached = self._cache.get(item.key)
        if cached is not None:
            return cached
        hq = self.hq.read(item.hq)
        problem = self.geometry.check_hq(item.hq, hq)
        if problem is not None:
            raise UsageError(problem, hint=f"lower --size, or remove the images smaller than {self.geometry.size} px")
        lq = None
        if item.lq is not None and self.lq is not None:
            lq = self.geometry.fit_lq(item.lq, hq, self.lq.read(item.lq))
        prepared = self.geometry.prepare(hq, lq)
        self._cache.put(item.key, prepared)
        return prepared

    def check_all(self, items: list[Item]) -> None:
        """Read every image once (filling the cache); one error naming every image that is too small."""
        small = []
        for item in items:
            try:
                self.load(item)
            except UsageError as exc:
                if "smaller than --size" not in exc.message:
                    raise
                small.append(exc.message)
        if small:
            more = f" (and {len(small) - 1} more)" if len(small) > 1 else ""
            raise UsageError(f"{len(small)} of {len(items)} images are too small: {small[0]}{more}",
                             hint=f"lower --size (a multiple of 32), or remove the images smaller than "
                                  f"{self.geometry.size} px")


Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def degradation(task: Task) -> Degrade | None:
    """The task's ``elir degrade`` degradation as uint8 -> uint8 LQ, or None where there is none (bsr)."""
    name = DEGRADATION_OF.get(task.name)
    if name is None:
        return None
    from elir_cli.evaluation.degrade import degrade_array

    def apply(hq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if name == "bfr-synthetic":
            import cv2

            cv2.setNumThreads(1)  # as elir degrade: the float results do not depend on threading
        return degrade_array(name, np.ascontiguousarray(hq), rng).lq

    return apply


def to_tensor(rgbs: list[np.ndarray]) -> "torch.Tensor":
    """uint8 HxWx3 images -> float32 (B,3,H,W) in [0,1]."""
    import torch

    stacked = np.stack([np.ascontiguousarray(x) for x in rgbs]).astype(np.float32) / np.float32(MAX_8BIT)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


class TrainingSet:
    """The training pairs: the batch of any step, made from the step alone (see the module doc)."""

    def __init__(self, items: list[Item], source: PairSource, *, batch_size: int, seed: int, flip: bool = True,
                 degrade: Degrade | None = None) -> None:
        if len(items) < batch_size:
            raise UsageError(f"{len(items)} training images, fewer than a batch of {batch_size}",
                             hint="lower --batch-size, or add images")
        if degrade is None and any(it.lq is None for it in items):
            raise UsageError(f"task {source.geometry.task.name} has no built-in degradation to make LQ images from",
                             hint="give the LQ images with --lq (paired with --hq by file name)")
        self.items, self.source = items, source
        self.batch_size, self.seed, self.flip, self.degrade = batch_size, seed, flip, degrade
        self.steps_per_epoch = len(items) // batch_size  # the last incomplete batch is dropped, as the authors do

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(derived_seed(self.seed, "order", epoch)).permutation(len(self.items))

    def indices(self, step: int) -> tuple[int, list[int]]:
        """(epoch, the item indices of the global batch of ``step``) (0-based steps)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        return epoch, order[position * self.batch_size:(position + 1) * self.batch_size].tolist()

    def sample(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[index]
        hq, lq = self.source.load(item)
        rng = np.random.default_rng(derived_seed(self.seed, "sample", epoch, item.key))
        hq, lq = self.source.geometry.crop(hq, lq, rng)
        if self.flip and rng.random() < FLIP_P:
            hq, lq = hq[:, ::-1], (lq[:, ::-1] if lq is not None else None)
        if lq is None:
            assert self.degrade is not None
            lq = self.degrade(hq, rng)
        return hq, lq

    def batch(self, step: int, *, rank: int = 0, world_size: int = 1) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(x_hq, x_lq) of ``step``: this rank's slice of the global batch, float (b,3,S,S) in [0,1]."""
        epoch, indices = self.indices(step)
        per_rank = self.batch_size // world_size
        mine = indices[rank * per_rank:(rank + 1) * per_rank]
        pairs = [self.sample(i, epoch) for i in mine]
        return to_tensor([h for h, _ in pairs]), to_tensor([lq for _, lq in pairs])


class ValidationSet:
    """Fixed validation pairs: centred crops (or whole faces), LQ drawn once per image."""

    def __init__(self, items: list[Item], source: PairSource, *, seed: int, degrade: Degrade | None = None) -> None:
        if not items:
            raise UsageError("no validation images", hint="give --val DIR, or more images in --hq")
        if degrade is None and any(it.lq is None for it in items):
            raise UsageError(f"task {source.geometry.task.name} has no built-in degradation to make validation LQ "
                             "images from", hint="give --val-lq (paired with --val), or leave out --val to hold "
                                                 "out part of --hq/--lq")
        self.items = items
        hqs, lqs = [], []
        for item in items:
            hq, lq = source.geometry.crop(*source.load(item), None)
            if lq is None:
                assert degrade is not None
                lq = degrade(hq, np.random.default_rng(derived_seed(seed, "validation", item.key)))
            hqs.append(hq)
            lqs.append(lq)
        self.hq = to_tensor(hqs)
        self.lq = to_tensor(lqs)

    def __len__(self) -> int:
        return len(self.items)
