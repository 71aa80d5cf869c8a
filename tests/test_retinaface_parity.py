"""Our copy of RetinaFace against facexlib's, the reference (the only test that imports facexlib).

``elir_cli.faces.retinaface`` replaces facexlib's network so that detection
imports neither facexlib nor torchvision. These tests pin it to the original:
the same checkpoint keys, the same network outputs and the same detections
(scores within 1e-4, boxes and landmarks within 1e-3 px) on real photos, with several faces,
rotated and small, for the bundled MobileNet-0.25 weights, and the same outputs
for the ResNet-50 variant with random weights (its file is a download).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import elir_cli.faces.detection as detection
from elir_cli.faces.detection import BGR_MEAN, Face, FaceDetector, nms, prior_boxes
from elir_cli.faces.retinaface import CONFIGS, RetinaFace
from tests.helpers.facephotos import collage, load

facexlib_retinaface = pytest.importorskip("facexlib.detection.retinaface", reason="facexlib is the reference")
facexlib_utils = pytest.importorskip("facexlib.detection.retinaface_utils", reason="facexlib is the reference")
torchvision = pytest.importorskip("torchvision", reason="torchvision's NMS is the reference")

# facexlib builds its ResNet-50 with torchvision's deprecated ``pretrained=False``
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torchvision.models._utils")

AWKWARD = Path(__file__).parent / "data" / "photos" / "awkward"
TOLERANCE = 1e-4
# Boxes and landmarks in pixels: a float32 step is 1.2e-4 at 1000-2000 px, and the
# detector's folded BatchNorm (fuse_batchnorm) rounds differently from facexlib's.
PIXEL_TOLERANCE = 1e-3
LOW_THRESHOLD = 0.05  # many candidates (false ones too), so that NMS has overlaps to settle


def raw_rgb(path: Path) -> np.ndarray:
    """Float RGB in [0,1] as stored: no EXIF rotation (hopper_orientation_6 stays on its side)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def photos() -> dict[str, np.ndarray]:
    """Real photos: a portrait, a grey one, several faces, rotated, small (128 px)."""
    return {
        "astronaut": load("astronaut.png"),
        "camera (grey)": load("camera.png"),
        "collage (9 faces, rotated, small)": collage()[0],
        "grace_hopper rotated 90": np.ascontiguousarray(np.rot90(load("grace_hopper.jpg"))),
        "hopper EXIF 6, stored on its side, 128 px": raw_rgb(AWKWARD / "hopper_orientation_6.jpg"),
        "hopper 128 px": raw_rgb(AWKWARD / "hopper.webp"),
    }


def facexlib_net(network: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    net = facexlib_retinaface.RetinaFace(network_name=network, half=False, device="cpu")
    net.load_state_dict(state, strict=True)
    return net.eval()


def bgr_input(rgb: np.ndarray) -> torch.Tensor:
    """What FaceDetector.detect feeds the network: BGR, 0..255, minus the training mean, (1,3,H,W)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1) * 255.0))[None]
    return x - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)


def max_diff(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> float:
    assert [t.shape for t in ours] == [t.shape for t in theirs]
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


class Recorder(torch.nn.Module):
    """A network that remembers its last outputs (so one detection gives both comparisons)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.last: tuple[torch.Tensor, ...] = ()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.last = tuple(self.net(x))
        return self.last


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[tuple, tuple, list[Face], list[Face]]]:
    """Per photo: our network's outputs, facexlib's, our faces, and the faces of the
    detector as it was (facexlib's network and decoding, torchvision's NMS)."""
    ours = FaceDetector()
    ref = FaceDetector()
    ours._net = Recorder(ours._net)
    state = torch.load(detection.detector_weights(detection.DEFAULT_DETECTOR), map_location="cpu", weights_only=True)
    ref._net = Recorder(facexlib_net("mobile0.25", {k.removeprefix("module."): v for k, v in state.items()}))
    out = {}
    for name, rgb in photos().items():
        mine = ours.detect(rgb, threshold=LOW_THRESHOLD)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(detection, "decode_boxes", facexlib_utils.decode)
            m.setattr(detection, "decode_landmarks", facexlib_utils.decode_landm)
            m.setattr(detection, "nms", lambda b, s, iou: torchvision.ops.nms(
                torch.from_numpy(b), torch.from_numpy(s), iou).numpy())
            expected = ref.detect(rgb, threshold=LOW_THRESHOLD)
        out[name] = (ours._net.last, ref._net.last, mine, expected)
    return out


@pytest.mark.parametrize("network", sorted(CONFIGS))
def test_same_checkpoint_keys_and_shapes(network: str) -> None:
    theirs = facexlib_retinaface.RetinaFace(network_name=network, device="cpu").state_dict()
    ours = RetinaFace(network=network).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_network_outputs_equal_facexlib_on_real_photos(runs) -> None:
    for name, (mine, theirs, _, _) in runs.items():
        diff = max_diff(mine, theirs)
        assert diff <= TOLERANCE, (name, diff)


def test_detections_equal_facexlib_and_torchvision(runs) -> None:
    for name, (_, _, mine, expected) in runs.items():
        assert len(mine) == len(expected), name
        for a, b in zip(mine, expected):
            assert a.index == b.index
            assert np.abs(np.subtract(a.box, b.box)).max() <= PIXEL_TOLERANCE, (name, a.box, b.box)
            assert abs(a.score - b.score) <= TOLERANCE, name
            assert np.abs(a.landmarks - b.landmarks).max() <= PIXEL_TOLERANCE, name
    # the photos are what they claim: faces found, several in the collage (the small one on
    # its side has none even at 0.05: it still compares the network's outputs)
    found = {name: len(run[2]) for name, run in runs.items()}
    assert found["collage (9 faces, rotated, small)"] >= 9, found
    assert all(found[name] >= 1 for name in ("astronaut", "camera (grey)", "grace_hopper rotated 90",
                                             "hopper 128 px")), found


def test_resnet50_outputs_equal_facexlib_random_weights() -> None:
    torch.manual_seed(0)
    ours = RetinaFace(network="resnet50").eval()
    state = ours.state_dict()
    for key, value in state.items():  # BatchNorm statistics away from 0/1, so they matter
        if key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    ours.load_state_dict(state)
    theirs = facexlib_net("resnet50", state)
    x = bgr_input(load("grace_hopper.jpg")[::2, ::2])
    with torch.inference_mode():
        out = ours(x)
        diff = max_diff(out, theirs(x))
    assert diff <= TOLERANCE
    assert float(out[0].abs().max()) > 1e-3  # not a network of zeros


@pytest.mark.parametrize("network", sorted(CONFIGS))
def test_folding_batchnorm_keeps_the_outputs(network: str) -> None:
    """fuse_batchnorm (FaceDetector runs the folded network): no BatchNorm left, same outputs."""
    import copy

    from elir_cli.faces.retinaface import fuse_batchnorm

    torch.manual_seed(0)
    net = RetinaFace(network=network)
    for module in net.modules():  # trained-like statistics, not the identity ones of a new network
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    folded = fuse_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 96, 128) * 50
    with torch.inference_mode():
        before, after = net(x), folded(x)
    assert max_diff(after, before) <= TOLERANCE
    assert max(float(t.abs().max()) for t in before) > 1e-2  # the outputs are not all ~0


def test_prior_boxes_equal_facexlib() -> None:
    for network in CONFIGS:
        cfg = facexlib_retinaface.generate_config(network)
        for h, w in [(100, 77), (601, 512)]:
            assert torch.equal(prior_boxes(CONFIGS[network], h, w), facexlib_utils.PriorBox(cfg, image_size=(h, w)).forward())


def test_nms_equals_torchvision() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 5, 60, 400):
        xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
        wh = rng.uniform(1, 60, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.choice(np.linspace(0.5, 1.0, 7), n).astype(np.float32)  # many ties
        for iou in (0.1, 0.4, 0.7):
            expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
            assert nms(boxes, scores, iou).tolist() == expected.tolist(), (n, iou)
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []
