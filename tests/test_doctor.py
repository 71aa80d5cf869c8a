"""``elir doctor``: the report a user pastes into a bug report, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from elir_cli.runner.doctor import diagnose
from tests.helpers.cli_helpers import run_elir
from tests.helpers.hubtools import tiny_files

KEYS = {"elir_cli", "python", "platform", "cpu", "gpus", "backends", "precision", "storage", "one_face"}


def test_json_report_describes_this_machine() -> None:
    done = run_elir("doctor", "--json", "--no-timing")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == KEYS and report["one_face"] is None
    assert report["cpu"]["torch_isa"] == torch.backends.cpu.get_cpu_capability()
    assert report["cpu"]["cores"] == os.cpu_count()
    assert report["gpus"]["cuda"]["available"] == torch.cuda.is_available()
    assert "CPUExecutionProvider" in report["backends"]["onnxruntime"]["providers"]  # the test extra has it
    assert set(report["precision"]["cpu"]["tasks"]) == {"bfr", "sr", "denoising", "inpainting", "bsr"}
    if sys.platform.startswith("linux"):
        assert report["cpu"]["flags"]["avx2"] == ("avx2" in Path("/proc/cpuinfo").read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux") or torch.backends.cpu.get_cpu_capability() == "DEFAULT",
                    reason="the forced-ISA variables are read by PyTorch's x86 dispatch")
def test_a_forced_isa_is_reported_as_dispatched() -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-m", "elir_cli", "doctor", "--json", "--no-timing"], capture_output=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    cpu = json.loads(done.stdout)["cpu"]
    assert cpu["torch_isa"] == "AVX2" and cpu["forced_isa"] == {"ATEN_CPU_CAPABILITY": "avx2",
                                                                  "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_cached_weights_and_their_calibration_are_reported(tiny_manifest: Path, tmp_path: Path) -> None:
    from elir_cli.registry.hub import import_task_weights

    source = tmp_path / "bfr.safetensors"
    source.write_bytes(tiny_files("bfr")["safetensors"])
    stored = import_task_weights(source, "bfr")
    report = diagnose(timing=True)
    assert report["storage"]["weights"]["bfr"] == str(stored) and report["storage"]["weights"]["sr"] is None
    assert report["storage"]["folders"]["store"]["bytes"] >= stored.stat().st_size
    face = report["one_face"]
    assert face["weights"] == str(stored) and face["device"] == "cpu"
    assert 0 < face["steady_ms"] and 0 < face["first_ms"]
    assert face["precision"] == report["precision"]["cpu"]["auto"]
    choice = report["precision"]["cpu"]["tasks"]["bfr"]
    assert choice["auto"] in (None, "fp32") and choice["why"]


def test_text_report_has_every_section() -> None:
    done = run_elir("doctor", "--no-timing")
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    for needle in ("CPU:", "PyTorch dispatches:", "CUDA:", "ONNX Runtime:", "--precision auto on cpu", "store:"):
        assert needle in text, needle


def test_a_failing_probe_is_reported_in_its_place() -> None:
    from elir_cli.cli.doctor import render

    report = diagnose(timing=False)
    report["gpus"] = {"error": "RuntimeError: no driver"}
    text = "\n".join(render(report))
    assert "GPUs: RuntimeError: no driver" in text and "CPU:" in text and "One face" not in text
