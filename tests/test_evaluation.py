"""elir degrade and elir eval: degradations, metrics, consistency, sweep, reports, the CLI end to end."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli_helpers import assert_one_line_error, run_elir, tiny_weights
from elir_cli.evaluation import degrade as deg
from elir_cli.evaluation.consistency import consistency
from elir_cli.evaluation.images import encode_png, read_uint8, resize_bicubic_uint8
from elir_cli.images.read import to_float

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "photos" / "faces"
MANIFEST = ROOT / "weights" / "manifest.json"

# The paper's numbers for ELIR, as issue 15 gives them (bfr's FID/PSNR/SSIM/LPIPS also in
# ../shared/elir-format/README.md).
PAPER = {
    "bfr": {"FID": 41.96, "NIQE": 4.33, "MUSIQ": 70.52, "PSNR": 25.85, "SSIM": 0.7009, "LPIPS": 0.3748, "IDS": 34.38},
    "sr": {"FID": 44.61, "PSNR": 24.08, "SSIM": 0.6631, "LPIPS": 0.3252},
    "denoising": {"FID": 40.26, "PSNR": 27.21},
    "inpainting": {"FID": 39.92, "PSNR": 25.55},
    "bsr": {"NIQE": 5.27, "CLIPIQA": 0.6041, "PSNR": 22.81, "SSIM": 0.6335, "LPIPS": 0.3743},
}


@pytest.fixture
def our_manifest(monkeypatch: pytest.MonkeyPatch) -> Path:
    """This checkout's manifest (an editable install elsewhere would otherwise supply its own)."""
    monkeypatch.setenv("ELIR_MANIFEST", str(MANIFEST))
    return MANIFEST


@pytest.fixture
def hq_dir(tmp_path: Path) -> Path:
    """The three real portraits, one in a subfolder."""
    folder = tmp_path / "hq"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(FACES / "astronaut.png", folder / "astronaut.png")
    shutil.copy(FACES / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    shutil.copy(FACES / "camera.png", folder / "sub" / "camera.png")
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the manifest's paper numbers


def test_manifest_holds_the_papers_numbers_for_every_task(our_manifest: Path) -> None:
    from elir_cli.evaluation.metrics import paper_metrics
    from elir_cli.registry.tasks import get_task

    for task, numbers in PAPER.items():
        paper = get_task(task).paper
        assert paper is not None and paper["dataset"], task
        assert {k: paper[k] for k in numbers} == numbers, task
        assert set(paper_metrics(task)) == {k.lower() for k in numbers}, task


# --------------------------------------------------------------------------- degradations


def test_sr_noise_has_the_papers_std_on_a_real_photo(tmp_path: Path, hq_dir: Path, our_manifest: Path) -> None:
    deg.degrade_folder("sr", hq_dir, tmp_path / "lq")
    hq = resize_bicubic_uint8(read_uint8(hq_dir / "astronaut.png"), (256, 256))
    clean32 = resize_bicubic_uint8(hq, (32, 32)).astype(np.float64)
    lq = read_uint8(tmp_path / "lq" / "astronaut.png")
    assert lq.shape == (256, 256, 3)
    blocks = lq.reshape(32, 8, 32, 8, 3)
    assert (blocks == blocks[:, :1, :, :1, :]).all(), "nearest-exact x8: every 8x8 block is one pixel"
    low = lq[::8, ::8].astype(np.float64)
    inside = (low > 0) & (low < 255)
    noise = (low - clean32)[inside]
    assert noise.size > 2500
    expected = math.sqrt(deg.SR_NOISE ** 2 + 1 / 12)  # rounding adds 1/12
    assert abs(noise.std() - expected) < 0.06 * expected
    assert abs(noise.mean()) < 4 * expected / math.sqrt(noise.size)


def test_denoising_noise_matches_a_clipped_rounded_gaussian(tmp_path: Path) -> None:
    from scipy.stats import norm

    grey = np.full((256, 256, 3), 128, dtype=np.uint8)
    lq = deg.degrade_denoising(grey, np.random.default_rng(1)).lq.astype(np.int64)
    sigma = deg.DENOISING_NOISE
    k = np.arange(256)
    upper = np.where(k == 255, 1.0, norm.cdf((k + 0.5 - 128) / sigma))
    lower = np.where(k == 0, 0.0, norm.cdf((k - 0.5 - 128) / sigma))
    p = upper - lower  # the exact law of clip(round(128 + N(0, sigma)))
    mean = (k * p).sum()
    std = math.sqrt(((k - mean) ** 2 * p).sum())
    n = lq.size
    assert abs(lq.mean() - mean) < 4 * std / math.sqrt(n)
    assert abs(lq.std() - std) < 0.01 * std
    assert abs((lq == 0).mean() - p[0]) < 4 * math.sqrt(p[0] * (1 - p[0]) / n)


def test_inpainting_mask_fraction_and_noise_match_the_parameters(tmp_path: Path, hq_dir: Path,
                                                                  our_manifest: Path) -> None:
    manifest = deg.degrade_folder("inpainting", hq_dir, tmp_path / "lq")
    hq = resize_bicubic_uint8(read_uint8(hq_dir / "astronaut.png"), (256, 256)).astype(np.float64)
    entry = next(f for f in manifest["files"] if f["input"] == "astronaut.png")
    mask = read_uint8(tmp_path / "lq" / entry["mask"])[:, :, 0] == 255
    n = mask.size
    assert abs(mask.mean() - deg.INPAINTING_MISSING) < 4 * math.sqrt(0.09 / n)
    assert entry["sampled"]["missing_fraction"] == pytest.approx(mask.mean())
    lq = read_uint8(tmp_path / "lq" / entry["output"]).astype(np.float64)
    kept = (~mask)[:, :, None] & (lq > 0) & (lq < 255)
    noise = (lq - hq)[kept]
    expected = math.sqrt(deg.INPAINTING_NOISE ** 2 + 1 / 12)
    assert abs(noise.std() - expected) < 0.05 * expected
    missing = lq[mask]  # zeroed, then noise: clip(round(N(0, 25.6)))
    assert abs((missing == 0).mean() - 0.5) < 0.03
    assert abs(missing[missing > 0].mean() - deg.INPAINTING_NOISE * math.sqrt(2 / math.pi)) < 1.0


def test_bfr_synthetic_samples_gfpgans_ranges() -> None:
    hq = np.full((64, 64, 3), 100, dtype=np.uint8)
    kinds = set()
    for seed in range(12):
        out = deg.degrade_bfr_synthetic(hq, np.random.default_rng(seed))
        s = out.sampled
        kinds.add(s["kernel"])
        assert 0.1 <= s["sigma_x"] <= 10 and 0.1 <= s["sigma_y"] <= 10
        assert 0.8 <= s["downscale"] <= 8 and 0 <= s["noise_std_255"] <= 20 and 60 <= s["jpeg_quality"] <= 100
        assert out.lq.shape == hq.shape and out.lq.dtype == np.uint8
    assert kinds == {"iso", "aniso"}
    kernel = deg.gaussian_kernel(41, 2.0, 5.0, 0.7)
    assert kernel.shape == (41, 41) and kernel.sum() == pytest.approx(1.0)
    assert np.allclose(kernel, kernel[::-1, ::-1])  # a centred Gaussian is point-symmetric


def test_same_seed_same_bytes_whatever_the_order_or_workers(tmp_path: Path, hq_dir: Path, our_manifest: Path) -> None:
    a = deg.degrade_folder("bfr-synthetic", hq_dir, tmp_path / "a", size=128, workers=1)
    b = deg.degrade_folder("bfr-synthetic", hq_dir, tmp_path / "b", size=128, workers=2)
    # Another folder: the files copied in reverse order, plus one more file, and inpainting's masks.
    other = tmp_path / "hq2"
    (other / "sub").mkdir(parents=True)
    for rel in ("sub/camera.png", "grace_hopper.jpg", "astronaut.png"):
        shutil.copy(hq_dir / rel, other / rel)
    shutil.copy(FACES / "astronaut.png", other / "extra.png")
    c = deg.degrade_folder("bfr-synthetic", other, tmp_path / "c", size=128, workers=2)
    outputs = {"astronaut.png", "grace_hopper.png", "sub/camera.png"}
    for rel in outputs:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes() \
            == (tmp_path / "c" / rel).read_bytes(), rel
    assert (tmp_path / "a" / deg.MANIFEST_NAME).read_bytes() == (tmp_path / "b" / deg.MANIFEST_NAME).read_bytes()
    assert a == b
    assert [f for f in c["files"] if f["output"] in outputs] == a["files"]
    d = deg.degrade_folder("bfr-synthetic", hq_dir, tmp_path / "d", size=128, seed=7)
    assert all(x["output_sha256"] != y["output_sha256"] for x, y in zip(a["files"], d["files"]))


def test_the_manifest_lists_every_file_with_its_hashes(tmp_path: Path, hq_dir: Path, our_manifest: Path) -> None:
    lq = tmp_path / "lq"
    manifest = deg.degrade_folder("inpainting", hq_dir, lq, size=64, seed=3)
    on_disk = {p.relative_to(lq).as_posix() for p in lq.rglob("*") if p.is_file()} - {deg.MANIFEST_NAME}
    listed = {f["output"] for f in manifest["files"]} | {f["mask"] for f in manifest["files"]}
    assert listed == on_disk and len(manifest["files"]) == 3
    assert {f["input"] for f in manifest["files"]} == {"astronaut.png", "grace_hopper.jpg", "sub/camera.png"}
    for f in manifest["files"]:
        assert f["input_sha256"] == sha256(hq_dir / f["input"])
        assert f["output_sha256"] == sha256(lq / f["output"])
        assert f["mask_sha256"] == sha256(lq / f["mask"])
        assert f["seed"] == deg.file_seed(3, "inpainting", f["input"])
    assert manifest["seed"] == 3 and manifest["size"] == 64 and manifest["task"] == "inpainting"
    assert manifest["parameters"]["missing_fraction"] == 0.9 and manifest["parameters"]["noise_std_255"] == 25.6
    assert json.loads((lq / deg.MANIFEST_NAME).read_text()) == manifest


def test_degrade_refuses_to_overwrite_and_leaves_inputs_alone(tmp_path: Path, hq_dir: Path,
                                                              our_manifest: Path) -> None:
    from elir_cli.errors import UsageError

    before = {p: sha256(p) for p in hq_dir.rglob("*") if p.is_file()}
    deg.degrade_folder("denoising", hq_dir, tmp_path / "lq", size=32)
    with pytest.raises(UsageError, match="already exists"):
        deg.degrade_folder("denoising", hq_dir, tmp_path / "lq", size=32)
    with pytest.raises(UsageError, match="overlap"):
        deg.degrade_folder("denoising", hq_dir, hq_dir / "lq", size=32)
    with pytest.raises(UsageError, match="multiple of 8"):
        deg.degrade_folder("sr", hq_dir, tmp_path / "sr", size=60)
    assert before == {p: sha256(p) for p in hq_dir.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- PSNR and SSIM


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Real photos and distorted versions: noise, blur, JPEG."""
    import io

    from PIL import Image, ImageFilter

    # 256x256 crops keep the test fast; SSIM on the full photos agrees as well.
    astronaut = read_uint8(FACES / "astronaut.png")[:256, 128:384]
    hopper = read_uint8(FACES / "grace_hopper.jpg")[100:356, 128:384]
    camera = read_uint8(FACES / "camera.png")[50:306, 150:406]
    noisy = deg.add_noise_uint8(astronaut, 10.0, np.random.default_rng(0))
    blurred = np.asarray(Image.fromarray(camera).filter(ImageFilter.GaussianBlur(2)))
    buffer = io.BytesIO()
    Image.fromarray(hopper).save(buffer, format="JPEG", quality=20)
    jpeg = read_uint8_bytes(buffer.getvalue())
    # A float restoration (not on the 8-bit grid), as the metrics see it.
    smooth = np.clip(to_float(astronaut) * 0.9 + 0.05, 0, 1)
    return [(to_float(astronaut), to_float(noisy)), (to_float(camera), to_float(blurred)),
            (to_float(hopper), to_float(jpeg)), (to_float(astronaut), smooth)]


def read_uint8_bytes(data: bytes) -> np.ndarray:
    from elir_cli.images.read import read_image, to_uint8

    return to_uint8(read_image(data).rgb)


def test_psnr_and_ssim_equal_scikit_image_and_pyiqa_on_real_photos() -> None:
    metrics_skimage = pytest.importorskip("skimage.metrics", reason="scikit-image is the independent reference")
    pytest.importorskip("pyiqa", reason="pyiqa's own psnr/ssim are the second reference (pip install 'elir-cli[eval]')")
    import torch

    from elir_cli.evaluation.metrics import MetricSet, pyiqa_factory

    cpu = torch.device("cpu")
    metrics = MetricSet(["psnr", "ssim"], "sr", cpu)  # built in: no pyiqa
    with_pyiqa = MetricSet(["psnr", "ssim"], "sr", cpu, factory=pyiqa_factory)
    luma = np.array([0.299, 0.587, 0.114])
    for gt, x in _pairs():
        ours = metrics.per_image(x, gt)
        theirs = with_pyiqa.per_image(x, gt)
        assert ours["psnr"] == pytest.approx(theirs["psnr"], abs=1e-5)
        assert ours["ssim"] == pytest.approx(theirs["ssim"], abs=1e-6)
        ref_psnr = metrics_skimage.peak_signal_noise_ratio(gt.astype(np.float64), x.astype(np.float64), data_range=1.0)
        # SSIM as the paper computes it: Y of YIQ (BT.601 weights) in 0-255, rounded; Gaussian window
        # of sigma 1.5 (11x11), population covariances, constants for a range of 255.
        y_gt, y_x = (np.rint(255 * (im.astype(np.float64) @ luma)) for im in (gt, x))
        ref_ssim = metrics_skimage.structural_similarity(y_gt, y_x, gaussian_weights=True, sigma=1.5,
                                                         use_sample_covariance=False, data_range=255)
        assert ours["psnr"] == pytest.approx(ref_psnr, abs=1e-4)
        assert ours["ssim"] == pytest.approx(ref_ssim, abs=1e-4)
        assert 0.2 < ours["ssim"] < 0.999 and 15 < ours["psnr"] < 45  # real, distinct distortions
    # A hand-computed case: the negative of a noise image is anti-correlated in every window, so
    # pyiqa's SSIM (its contrast-structure term clipped at 0) is exactly 0, where scikit-image's is negative.
    noise = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    assert metrics.per_image(1 - noise, noise)["ssim"] == 0.0 == with_pyiqa.per_image(1 - noise, noise)["ssim"]
    # and PSNR of a uniform error e is -20 log10(e)
    assert metrics.per_image(np.clip(noise + 0.1, 0, 1), np.clip(noise, 0, 0.9))["psnr"] == pytest.approx(20.0, abs=1e-4)


# --------------------------------------------------------------------------- consistency


def test_consistency_is_maximal_for_an_exact_pre_image_and_drops_when_content_is_added() -> None:
    rng = np.random.default_rng(0)
    hq = resize_bicubic_uint8(read_uint8(FACES / "astronaut.png"), (256, 256))
    gt = to_float(hq)
    invented = gt.copy()
    invented[96:160, 96:160] = rng.random((64, 64, 3))  # content the input contradicts

    # sr without noise: the ground truth is a pre-image of its LQ (up to 8-bit rounding).
    lq = to_float(deg.degrade_sr(hq, rng, noise=0.0).lq)
    exact = consistency("sr", gt, lq)
    assert exact > 45 and exact > consistency("sr", invented, lq) + 15
    blurry = to_float(resize_bicubic_uint8(hq, (32, 32)).repeat(8, 0).repeat(8, 1))
    assert consistency("sr", blurry, lq) < exact

    # denoising: the identity; the input itself is the exact pre-image and scores the cap.
    lq = to_float(deg.degrade_denoising(hq, rng, noise=20.0).lq)
    assert consistency("denoising", lq, lq) == pytest.approx(80.0)
    assert consistency("denoising", gt, lq) > consistency("denoising", invented, lq)

    # inpainting without noise: the ground truth agrees with every kept pixel.
    made = deg.degrade_inpainting(hq, rng, noise=0.0)
    lq = to_float(made.lq)
    assert consistency("inpainting", gt, lq, made.mask) == pytest.approx(80.0)
    filled_wrong = np.where(made.mask[:, :, None], gt, 1.0 - gt)
    assert consistency("inpainting", filled_wrong, lq, made.mask) < 20
    assert consistency("bfr", gt, gt) is None and consistency("bsr", gt, gt) is None


def test_eval_uses_the_inpainting_mask_from_the_manifest(tmp_path: Path, hq_dir: Path, our_manifest: Path) -> None:
    """Restored files that keep every pixel the input kept and paint the missing ones white are
    exact pre-images (80 dB); the same files judged without the mask would score low."""
    from elir_cli.evaluation.evaluate import EvalSettings, Evaluator

    lq = tmp_path / "lq"
    manifest = deg.degrade_folder("inpainting", hq_dir, lq, size=64)
    painted = tmp_path / "painted"
    for entry in manifest["files"]:
        image = read_uint8(lq / entry["output"])
        image[read_uint8(lq / entry["mask"])[:, :, 0] == 255] = 255
        (painted / entry["output"]).parent.mkdir(parents=True, exist_ok=True)
        (painted / entry["output"]).write_bytes(encode_png(image))
    settings = EvalSettings(task="inpainting", lq_dir=lq, restored_dir=painted, out_dir=tmp_path / "out",
                            metrics="consistency", device="cpu")
    results = Evaluator(settings).run()
    assert [r["name"] for r in results["images"]] == ["astronaut", "grace_hopper", "sub/camera"]  # masks/ is not input
    assert all(r["consistency"] == pytest.approx(80.0) for r in results["images"])
    image = to_float(read_uint8(painted / "astronaut.png"))
    assert consistency("inpainting", image, to_float(read_uint8(lq / "astronaut.png"))) < 15  # without the mask


# --------------------------------------------------------------------------- metrics that need weights


def test_metric_plumbing_with_stubbed_pyiqa_metrics(tmp_path: Path, hq_dir: Path, our_manifest: Path) -> None:
    """Float inputs clipped to [0, 1] reach each metric; FID is called on the saved PNGs with the paper's
    FFHQ reference (512 for bfr, 256 otherwise, clean mode); the report compares with the paper."""
    import torch

    from elir_cli.evaluation.evaluate import EvalSettings, Evaluator

    seen: dict[str, list] = {"lpips": [], "niqe": [], "fid": []}

    def factory(spec, task, device):  # type: ignore[no-untyped-def]
        def metric(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen[spec.name].append((args, kwargs))
            if spec.name == "fid":
                return 12.5
            x = args[0]
            assert x.dtype == torch.float32 and x.shape[:2] == (1, 3) and 0 <= x.min() and x.max() <= 1
            return torch.tensor([float(x.mean())])
        return metric

    lq = tmp_path / "lq"
    deg.degrade_folder("denoising", hq_dir, lq, size=64)

    def overshoot(x: torch.Tensor) -> torch.Tensor:  # a restorer whose output leaves [0, 1]
        return x * 1.7 - 0.3

    for task, res in (("denoising", 256), ("bfr", 512)):
        for values in seen.values():
            values.clear()
        out = tmp_path / f"out_{task}"
        settings = EvalSettings(task=task, lq_dir=lq, gt_dir=hq_dir, out_dir=out, metrics="lpips,niqe,fid",
                                device="cpu")
        results = Evaluator(settings, restorer=overshoot, metric_factory=factory).run()
        assert len(seen["lpips"]) == len(seen["niqe"]) == 3 and len(seen["fid"]) == 1
        args, kwargs = seen["fid"][0]
        assert args == (str(out / "restored"),)
        assert kwargs == {"dataset_name": "FFHQ", "dataset_res": res, "dataset_split": "trainval70k", "mode": "clean"}
        x = seen["niqe"][0][0][0]
        assert (x * 255 - torch.round(x * 255)).abs().max() > 1e-3  # not rounded to 8 bits
        assert results["overall"]["fid"]["ours"] == 12.5
        paper = PAPER[task]["FID"]
        assert results["overall"]["fid"]["paper"] == paper
        assert results["overall"]["fid"]["difference"] == pytest.approx(12.5 - paper)
        md = (out / "results.md").read_text()
        assert f"| FID | 12.50 | {paper:.2f} | {12.5 - paper:+.2f} | lower |" in md


def test_missing_metric_weights_offline_is_one_line_naming_the_files(tmp_path: Path, hq_dir: Path) -> None:
    pytest.importorskip("pyiqa", reason="the metrics come from pyiqa (pip install 'elir-cli[eval]')")
    torch_home = tmp_path / "torch"
    env = {"TORCH_HOME": str(torch_home), "HF_HUB_OFFLINE": "1", "ELIR_MANIFEST": str(MANIFEST)}
    res = run_elir("eval", "--task", "bfr", "--lq", str(hq_dir), "--restored", str(hq_dir), "--gt", str(hq_dir),
                   "-o", str(tmp_path / "out"), "--metrics", "psnr,lpips,niqe", env=env)
    line = assert_one_line_error(res)
    folder = torch_home / "hub"
    assert "metrics LPIPS, NIQE need" in line and "vgg16-397923af.pth in " + str(folder / "checkpoints") in line
    assert "LPIPS_v0.1_vgg-a78928a0.pth in " + str(folder / "pyiqa") in line
    assert "niqe_modelparameters.mat in " + str(folder / "pyiqa") in line
    assert "Hint:" in res.stderr.decode() and "https://" in res.stderr.decode()
    assert not (tmp_path / "out").exists()


def test_without_pyiqa_psnr_ssim_work_and_other_metrics_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import torch

    from elir_cli.errors import ElirError
    from elir_cli.evaluation.metrics import MetricSet

    monkeypatch.setitem(sys.modules, "pyiqa", None)  # "import pyiqa" now fails as if it were not installed
    image = to_float(read_uint8(FACES / "camera.png"))[:64, :64]
    values = MetricSet(["psnr", "ssim"], "sr", torch.device("cpu")).per_image(image, image)
    assert values == {"psnr": pytest.approx(80.0), "ssim": pytest.approx(1.0)}
    with pytest.raises(ElirError, match="need pyiqa") as caught:
        MetricSet(["psnr", "lpips"], "sr", torch.device("cpu"))
    assert caught.value.hint == 'pip install "elir-cli[eval]"'


def test_a_prefilled_cache_is_used_offline(tmp_path: Path, hq_dir: Path) -> None:
    """A small stand-in for NIQE's parameters in pyiqa's cache: pyiqa's NIQE runs on it, offline."""
    pytest.importorskip("pyiqa", reason="the metrics come from pyiqa (pip install 'elir-cli[eval]')")
    from scipy.io import savemat

    cache = tmp_path / "torch" / "hub" / "pyiqa"
    cache.mkdir(parents=True)
    features = 36  # NIQE's 18 features at two scales
    savemat(cache / "niqe_modelparameters.mat", {"mu_prisparam": np.zeros((1, features)),
                                                  "cov_prisparam": np.eye(features)})
    small = tmp_path / "small"
    small.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        (small / f"{name[:-4]}.png").write_bytes(encode_png(resize_bicubic_uint8(read_uint8(FACES / name), (192, 192))))
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_OFFLINE": "1", "ELIR_MANIFEST": str(MANIFEST)}
    res = run_elir("eval", "--task", "bfr", "--lq", str(small), "--restored", str(small),
                   "-o", str(tmp_path / "out"), "--metrics", "niqe", "--json", env=env)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    results = json.loads(res.stdout)
    values = [r["niqe"] for r in results["images"]]
    assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values) and values[0] != values[1]
    assert results["overall"]["niqe"]["paper"] == PAPER["bfr"]["NIQE"]
    assert [p.name for p in cache.iterdir()] == ["niqe_modelparameters.mat"]  # nothing else was fetched


# --------------------------------------------------------------------------- the sweep and the CLI


def test_the_sweep_writes_its_plot_and_table(tmp_path: Path, hq_dir: Path, our_manifest: Path) -> None:
    from PIL import Image

    from elir_cli.evaluation.evaluate import EvalSettings, Evaluator, parse_sweep

    lq = tmp_path / "lq"
    deg.degrade_folder("denoising", hq_dir, lq, size=64)
    weights = tiny_weights(tmp_path, "denoising")
    settings = EvalSettings(task="denoising", lq_dir=lq, gt_dir=hq_dir, out_dir=tmp_path / "out", weights=str(weights),
                            metrics="psnr,ssim,consistency", device="cpu")
    result = Evaluator(settings).sweep(*parse_sweep("fidelity=0,0.5,1"))
    assert [p["label"] for p in result["points"]] == ["fidelity=0", "fidelity=0.5", "fidelity=1"]
    assert (result["x"], result["y"]) == ("psnr", "ssim")
    with Image.open(tmp_path / "out" / "sweep.png") as im:
        assert im.format == "PNG" and im.size == (640, 480)
        pixels = np.asarray(im.convert("RGB"))
    assert (pixels < 128).any() and (pixels == 255).mean() > 0.5  # drawn on a white canvas
    table = (tmp_path / "out" / "sweep.md").read_text()
    assert "| fidelity | PSNR | SSIM | Consistency | seconds |" in table and "| 0.5 |" in table
    psnrs = [p["overall"]["psnr"]["ours"] for p in result["points"]]
    assert len(set(psnrs)) > 1  # the settings really differ
    restored = []
    for p in result["points"]:
        folder = tmp_path / "out" / "sweep" / p["label"]
        assert (folder / "results.json").is_file()
        restored.append((folder / "restored" / "astronaut.png").read_bytes())  # each setting restores anew
    assert restored[0] != restored[2]


def test_default_metrics_are_the_papers_and_ids_needs_its_weights(our_manifest: Path) -> None:
    from elir_cli.errors import UsageError
    from elir_cli.evaluation.metrics import default_metrics, parse_metrics

    assert default_metrics("bfr") == ["psnr", "ssim", "lpips", "niqe", "musiq", "fid"]
    assert default_metrics("bfr", identity=True)[-1] == "ids"
    assert default_metrics("sr") == ["psnr", "ssim", "lpips", "fid", "consistency"]
    assert default_metrics("bsr") == ["psnr", "ssim", "lpips", "niqe", "clipiqa"]
    for bad, task in (("fid", "bsr"), ("consistency", "bfr"), ("psnr,sharpness", "sr"), (",", "sr")):
        with pytest.raises(UsageError):
            parse_metrics(bad, task)


def test_parse_sweep_refuses_bad_values() -> None:
    from elir_cli.errors import UsageError
    from elir_cli.evaluation.evaluate import parse_sweep

    assert parse_sweep("steps=1,2,3") == ("steps", [1.0, 2.0, 3.0])
    for bad in ("fidelity=0,2", "steps=0.5,1", "seed=1,2", "fidelity=1", "fidelity=a,b"):
        with pytest.raises(UsageError):
            parse_sweep(bad)


@pytest.mark.slow
def test_cli_degrade_then_eval_end_to_end(tmp_path: Path, hq_dir: Path) -> None:
    env = {"ELIR_MANIFEST": str(MANIFEST)}
    lq = tmp_path / "lq"
    res = run_elir("degrade", "--task", "sr", str(hq_dir), "-o", str(lq), "--size", "64", "--workers", "2", env=env)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert "3 images degraded" in res.stdout.decode()
    weights = tiny_weights(tmp_path, "sr")
    out = tmp_path / "results"
    args = ["eval", "--task", "sr", "--lq", str(lq), "--gt", str(hq_dir), "--weights", str(weights), "--steps", "1",
            "--metrics", "psnr,ssim,consistency", "-o", str(out)]
    res = run_elir(*args, env=env)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    stdout = res.stdout.decode()
    assert "| PSNR |" in stdout and "| 24.08 |" in stdout and "| Consistency |" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["seed"] == 2025 and results["settings"]["steps"] == 1
    assert [r["name"] for r in results["images"]] == ["astronaut", "grace_hopper", "sub/camera"]
    for r in results["images"]:
        assert (out / "restored" / f"{r['name']}.png").is_file()
        assert set(r) >= {"psnr", "ssim", "consistency"}
    assert results["overall"]["psnr"]["ours"] == pytest.approx(np.mean([r["psnr"] for r in results["images"]]))
    html = (out / "report.html").read_text()
    assert "Worst 1 by PSNR" in html and "Best 2 by PSNR" in html and html.count("<img") == 3
    worst = min(results["images"], key=lambda r: r["psnr"])["name"]
    assert html.index(f'alt="{worst}"') < html.index("Best 2")
    assert "| sub/camera |" in (out / "results.md").read_text()
    again = run_elir(*args, env=env)
    assert "already exists" in assert_one_line_error(again)


def test_identity_angle_with_arcface_weights_in_the_released_layout(tmp_path: Path) -> None:
    """IDS: a state dict saved as the ArcFace release is (DataParallel 'module.' keys) loads strictly;
    the angle is 0 for the same face and grows as the face is changed."""
    import torch

    from elir_cli.errors import StateDictMismatchError
    from elir_cli.faces.identity import IdentityMetric, build_arcface

    torch.manual_seed(0)
    net = build_arcface()
    assert sum(p.numel() for p in net.parameters()) > 10_000_000  # ResNet-18 with a 32768x512 fc
    path = tmp_path / "resnet18_110.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    ids = IdentityMetric(path, torch.device("cpu"))
    face = to_float(resize_bicubic_uint8(read_uint8(FACES / "astronaut.png"), (128, 128)))
    other = to_float(resize_bicubic_uint8(read_uint8(FACES / "grace_hopper.jpg"), (128, 128)))
    same = ids.angle(face, face)
    slightly = ids.angle(np.clip(face + 0.02, 0, 1), face)
    assert same < 0.1 < slightly < ids.angle(other, face) <= 180
    small = tmp_path / "other.pth"  # another network's file: refused with the keys named
    torch.save({"module.conv1.weight": torch.zeros(64, 1, 3, 3), "module.head.weight": torch.zeros(2, 2)}, small)
    with pytest.raises(StateDictMismatchError, match="missing .*unexpected 1: head.weight"):
        IdentityMetric(small, torch.device("cpu"))
