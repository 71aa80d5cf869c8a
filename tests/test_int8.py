"""--precision int8: NNCF quantization on OpenVINO, its calibration record, accuracy control, auto's choice.

Quantizing the tiny weights takes about 20 s on two cores (the float32 run
of the calibration set, NNCF's statistics, the int8 run, the timings), so
the module quantizes once (``quantized``) into a cache shared by its tests,
as a user's first ``--precision int8`` does, and the later tests load from
that cache as a user's second run does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import elir_cli
from tests.helpers.cli_helpers import assert_one_line_error, run_elir, tiny_weights

pytestmark = pytest.mark.openvino
pytest.importorskip("openvino", reason='the openvino extra is not installed (pip install "elir-cli[openvino]")')
pytest.importorskip("nncf", reason='NNCF is not installed (pip install "elir-cli[openvino]")')

from elir_cli.model import int8  # noqa: E402
from elir_cli.model.openvino_backend import cache_folder, convert, stages_of  # noqa: E402
from elir_cli.model.runtime import cpu_supports_bf16, resolve_runtime  # noqa: E402
from elir_cli.model.stages import STAGES  # noqa: E402
from elir_cli.pipeline.calibration import INT8_KIND, THRESHOLD_DB, int8_verdict, psnr_db  # noqa: E402
from elir_cli.registry.store import CalibrationRecord, openvino_cache_dir, read_calibration, sha256_file  # noqa: E402

PHOTO = Path(__file__).parent / "data" / "photos" / "faces" / "camera.png"


@pytest.fixture(scope="module")
def int8_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("int8-weights"), "denoising", seed=11)


@pytest.fixture(scope="module")
def int8_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture
def int8_cache(int8_cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ELIR_CACHE shared by this module's tests (the conftest gives each test its own)."""
    monkeypatch.setenv("ELIR_CACHE", str(int8_cache_root))
    return int8_cache_root


@pytest.fixture
def quantized(int8_weights: Path, int8_cache: Path) -> tuple[elir_cli.ElirModel, list[str]]:
    """The tiny weights at int8 (quantized by the first test that asks, loaded from the cache after)."""
    said: list[str] = []
    return elir_cli.load_model(int8_weights, device="cpu", precision="int8", log=said.append), said


def sample(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, size, size, generator=gen), torch.randn(1, 16, size // 8, size // 8, generator=gen)


def test_int8_is_quantized_once_measured_recorded_and_close_to_fp32(
        quantized: tuple[elir_cli.ElirModel, list[str]], int8_weights: Path, int8_cache: Path) -> None:
    model, said = quantized
    assert model.precision == "int8" and model.backend == "openvino"
    sha = sha256_file(int8_weights)
    record = read_calibration(sha, "int8", INT8_KIND)
    assert record is not None and record.task == "denoising" and record.images == 4
    assert record.passed and record.psnr_db >= THRESHOLD_DB and min(record.per_image_db) == record.psnr_db
    assert record.seconds_per_image > 0 and record.fp32_seconds_per_image > 0
    assert (record.bf16_seconds_per_image is not None) == cpu_supports_bf16()
    assert record.quantized and record.quantized > 50  # every conv's weights and inputs, at least
    # the quantized networks are in the weights file's OpenVINO cache
    folder = cache_folder(openvino_cache_dir(sha))
    assert all(int8.ir_path(folder, name).is_file() for name in STAGES)
    # their compiled blobs name the quantization they came from (a digest of the IR's weights)
    blobs = sorted(folder.glob("*.int8.*.blob"))
    assert {b.name.split(".")[0] for b in blobs} == set(STAGES)
    for blob in blobs:
        stage, _, digest = blob.name.split(".")[:3]
        weights_bin = int8.ir_path(folder, stage).with_suffix(".bin")
        assert digest == hashlib.sha256(weights_bin.read_bytes()).hexdigest()[:12], blob.name
    # --precision int8 says its measured dB
    assert any(f"int8 (openvino): {record.psnr_db:.1f} dB vs fp32" in line for line in said), said

    # int8 restores close to fp32, and not identically (it is quantized)
    fp32 = elir_cli.load_model(int8_weights, device="cpu", precision="fp32", backend="torch")
    x, noise = sample()
    a, b = fp32.restore(x, noise=noise), model.restore(x, noise=noise)
    assert 35.0 <= psnr_db(a, b) < 100.0
    # below a 16 x 16 latent the networks run at fp32 (OpenVINO's int8 kernels crashed there on AVX2)
    x, noise = sample(64)
    assert psnr_db(fp32.restore(x, noise=noise), model.restore(x, noise=noise)) >= 100.0


def test_a_second_load_reads_the_quantized_networks_from_the_cache(
        quantized: tuple[elir_cli.ElirModel, list[str]], int8_weights: Path) -> None:
    first, _ = quantized  # quantized now, or by the test before: either way the cache holds it
    said: list[str] = []
    again = elir_cli.load_model(int8_weights, device="cpu", precision="int8", log=said.append)
    assert not any("Quantizing" in line for line in said), said
    x, noise = sample()
    assert torch.equal(first.restore(x, noise=noise), again.restore(x, noise=noise))
    assert all("ir" not in stage.loaded_from for stage in stages_of(again))  # nothing traced from PyTorch


def test_auto_uses_int8_exactly_when_the_record_says_it_passes_and_pays(
        quantized: tuple[elir_cli.ElirModel, list[str]], int8_weights: Path) -> None:
    record = read_calibration(sha256_file(int8_weights), "int8", INT8_KIND)
    assert record is not None
    said: list[str] = []
    auto = elir_cli.load_model(int8_weights, device="cpu", log=said.append)  # --backend auto --precision auto
    native = resolve_runtime("cpu", "auto", "torch").precision
    uses, why = int8_verdict(record, native)
    assert (auto.precision == "int8") == uses
    assert auto.backend == ("openvino" if uses else "torch")
    assert (f"Using int8 (openvino) instead of {native}, by its calibration record: {why}" in said) == uses
    # --backend torch never leaves PyTorch
    assert elir_cli.load_model(int8_weights, device="cpu", backend="torch").backend == "torch"


def record(**fields: object) -> CalibrationRecord:
    base = dict(sha256="x", precision="int8", device_kind=INT8_KIND, psnr_db=47.0, threshold_db=45.0, passed=True,
                images=4, seconds=20.0, seconds_per_image=1.0, fp32_seconds_per_image=2.0,
                bf16_seconds_per_image=1.2)
    return CalibrationRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_the_verdict_needs_45_db_1_5x_fp32_and_beating_bf16() -> None:
    assert int8_verdict(record())[0]
    assert int8_verdict(record(fp32_seconds_per_image=1.5))[0]  # exactly 1.5x
    slow = int8_verdict(record(fp32_seconds_per_image=1.4))
    assert not slow[0] and "1.40x as fast as fp32" in slow[1]
    bad = int8_verdict(record(passed=False, psnr_db=43.2))
    assert not bad[0] and "43.2 dB" in bad[1]
    assert int8_verdict(record(), "bf16")[0]  # 1.2 / 1.0 = 1.2x bf16
    close = int8_verdict(record(bf16_seconds_per_image=1.05), "bf16")
    assert not close[0] and "bf16" in close[1]
    assert not int8_verdict(record(bf16_seconds_per_image=None), "bf16")[0]


class Fragile(nn.Module):
    """conv -> +1000 -> conv: int8 cannot carry the detail riding on the offset, float32 can."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 3, 3, padding=1)
        with torch.no_grad():
            self.a.bias += 1000.0
            self.b.bias -= 1000.0 * self.b.weight.sum(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_accuracy_control_keeps_the_layers_that_break_in_float32() -> None:
    """Our wrapper of NNCF's accuracy control: plain int8 fails the bound; controlled int8 meets it."""
    import openvino as ov

    module = Fragile().eval()
    rng = np.random.default_rng(0)
    data = [[rng.random((1, 3, 32, 32), dtype=np.float32)] for _ in range(4)]
    wanted = [module(torch.from_numpy(d[0])).detach() for d in data]
    model = convert(module, (torch.from_numpy(data[0][0]),))

    def validate(compiled: object, items: list[int]) -> tuple[float, list[float]]:
        values = [psnr_db(wanted[i] / 10, torch.from_numpy(compiled([data[i][0]])[0].copy()) / 10)  # type: ignore[operator]
                  for i in items]
        return min(values), values

    def measure(quantized: object) -> float:
        return validate(ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                        list(range(4)))[0]

    plain = int8.quantize(model, data)
    assert measure(plain.model) < 45.0
    controlled = int8.quantize_with_control(model, data, list(range(4)), validate, max_drop=80.0 - 45.0, plain=plain)
    assert measure(controlled.model) >= 45.0
    # layers kept in fp32: some (all 3 with oneDNN limited to AVX2, whose int8 arithmetic is coarser here)
    assert 0 < controlled.reverted <= int8.quantizers(plain.model)


def test_int8_refusals_are_one_line_errors(int8_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    torch_int8 = run_elir("restore", str(PHOTO), "-o", str(out), "--weights", str(int8_weights), "--task",
                          "denoising", "--precision", "int8", "--backend", "torch")
    assert assert_one_line_error(torch_int8) == "Error: int8 runs on OpenVINO, not on the torch backend"
    assert b"--backend auto" in torch_int8.stderr
    gpu_int8 = run_elir("restore", str(PHOTO), "-o", str(out), "--weights", str(int8_weights), "--task",
                        "denoising", "--precision", "int8", "--device", "cuda")
    assert assert_one_line_error(gpu_int8).startswith("Error: int8 runs on the CPU (OpenVINO), not on cuda")
    assert not out.exists()


def test_without_nncf_int8_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "nncf", None)  # an import of nncf now fails, as when it is absent
    with pytest.raises(elir_cli.UsageError, match="int8 needs OpenVINO and NNCF") as refused:
        resolve_runtime("cpu", "int8")
    assert refused.value.hint == int8.INSTALL_HINT


def test_the_cli_restores_at_int8_and_reports_it(int8_weights: Path, int8_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    done = run_elir("restore", str(PHOTO), "-o", str(out), "--weights", str(int8_weights), "--task", "denoising",
                    "--aligned", "--precision", "int8", "--json", env={"ELIR_CACHE": str(int8_cache)})
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)  # stdout holds only the JSON: NNCF's progress bars went to stderr
    assert "int8" in json.dumps(report) and "openvino" in json.dumps(report)
    assert out.is_file()
