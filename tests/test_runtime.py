"""Device, precision and memory-format logic, exercised on the CPU."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from elir_cli.errors import UsageError
from elir_cli.model.runtime import (
    Runtime,
    auto_batch_size,
    cpu_supports_bf16,
    prepare_model,
    resolve_device,
    resolve_precision,
    resolve_runtime,
    tune_cpu_allocator,
)
from tests.helpers.tiny import TINY, tiny_model


def test_auto_device_is_the_best_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


def test_unavailable_or_unknown_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_precision_rules_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    with pytest.raises(UsageError, match="fp16 is not supported on this CPU, which supports: fp32"):
        resolve_precision("fp16", cpu)
    if cpu_supports_bf16():
        assert resolve_precision("bf16", cpu) is torch.bfloat16
    else:
        with pytest.raises(UsageError, match="bf16"):
            resolve_precision("bf16", cpu)
    with pytest.raises(UsageError, match="unknown precision"):
        resolve_precision("int4", cpu)
    with pytest.raises(UsageError, match="int8 runs on OpenVINO") as refused:
        resolve_precision("int8", cpu)
    assert "--backend auto" in refused.value.hint


def test_gpu_precisions_map_to_half_dtypes() -> None:
    # The mapping for GPUs is pure logic; check it without a GPU via a meta device type.
    fake_cuda = torch.device("cuda")
    if torch.cuda.is_available():
        assert resolve_precision("fp16", fake_cuda) is torch.float16
    else:
        assert resolve_precision("fp16", fake_cuda) is torch.float16  # no device query for fp16
    assert resolve_precision("fp16", torch.device("mps")) is torch.float16
    with pytest.raises(UsageError, match="bf16 is not supported on Apple's MPS backend, which supports: fp32, fp16"):
        resolve_precision("bf16", torch.device("mps"))


def test_prepared_model_matches_the_plain_one() -> None:
    plain = tiny_model(seed=3)
    fast = prepare_model(tiny_model(seed=3), resolve_runtime("cpu", "fp32"))
    assert fast.is_channels_last and not plain.is_channels_last
    assert all(not p.requires_grad for p in fast.parameters())
    x = torch.rand(2, 3, 64, 96)
    noise = torch.randn(2, TINY.latent_channels, 8, 12)
    with torch.inference_mode():
        a, b = plain(x, noise=noise), fast(x, noise=noise)
    assert b.is_contiguous(memory_format=torch.channels_last) or b.is_contiguous()
    assert (a - b).abs().max().item() < 1e-4


COMPILE_SCRIPT = """
import dataclasses, json
import torch
from torch._dynamo.utils import counters
from elir_cli.model.runtime import prepare_model, resolve_runtime
from tests.helpers.tiny import TINY, tiny_model

# Two levels in the vector field instead of four: a third fewer kernels for Inductor to build
# (32 s instead of 46 s cold on 2 cores), the same four networks to capture.
SMALL = dataclasses.replace(TINY, ch_mult=(1, 2))
runtime = resolve_runtime("cpu", "fp32")
plain = prepare_model(tiny_model(seed=3, config=SMALL), runtime)
compiled = prepare_model(tiny_model(seed=3, config=SMALL), runtime, compile=True)
x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
noise = torch.randn(1, SMALL.latent_channels, 8, 12, generator=torch.Generator().manual_seed(1))
with torch.inference_mode():
    a, b = plain(x, noise=noise), compiled(x, noise=noise)
print(json.dumps({"max_diff": (a - b).abs().max().item(), "graphs": counters["stats"]["unique_graphs"],
                  "keys_same": list(plain.state_dict()) == list(compiled.state_dict())}))
"""


@pytest.mark.slow
def test_compiled_model_matches_the_plain_one() -> None:
    # A child process: torch.compile's caches and settings are process-wide.
    import json
    import subprocess
    from pathlib import Path

    # Run in the repository root: "-c" puts the current folder on sys.path, so tests.helpers imports.
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["graphs"] >= 4, result  # the four networks were captured, not silently left eager
    assert result["keys_same"], result
    assert result["max_diff"] < 1e-4, result
    assert b"No CUDA runtime" not in done.stderr  # Inductor's irrelevant CPU-build warning is quiet


def test_a_forced_isa_compiles_into_its_own_inductor_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Inductor's cache does not key by ATEN_CPU_CAPABILITY: kernels compiled under =avx2 and
    reused natively crashed the process (torch 2.14). Each forced setting gets its own folder."""
    from elir_cli.model.runtime import separate_inductor_cache_for_forced_isa

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    separate_inductor_cache_for_forced_isa()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)  # native: the usual cache
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "AVX2")
    separate_inductor_cache_for_forced_isa()
    separate_inductor_cache_for_forced_isa()  # once only, however often models are compiled
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "aten-avx2")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    separate_inductor_cache_for_forced_isa()
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == os.path.join(default_cache_dir(), "aten-avx2")


def test_half_precision_keeps_the_sampler_in_float32() -> None:
    model = tiny_model(seed=4)
    model.compute_dtype = torch.bfloat16  # CPU autocast runs bf16 even where it is emulated
    states: list[torch.dtype] = []
    x = torch.rand(1, 3, 32, 32)
    noise = torch.randn(1, TINY.latent_channels, 4, 4)
    with torch.inference_mode():
        half = model(x, noise=noise, callback=lambda i, n, t, z: states.append(z.dtype))
        model.compute_dtype = None
        full = model(x, noise=noise)
    assert states == [torch.float32] * TINY.k_steps
    assert half.dtype == torch.float32
    err = (half - full).abs().max().item()
    assert 0 < err < 0.1  # really computed in bf16, and still close


def test_runtime_describes_itself() -> None:
    assert Runtime(torch.device("cpu"), None).describe() == "cpu (fp32)"
    assert Runtime(torch.device("cuda"), torch.float16).describe() == "cuda (fp16)"


def test_default_batch_size_is_one_on_the_cpu_and_larger_on_gpus() -> None:
    assert auto_batch_size("cpu") == auto_batch_size(torch.device("cpu")) == 1
    assert auto_batch_size(torch.device("cuda", 0)) == auto_batch_size("mps") == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is a glibc (Linux) facility")
def test_allocator_tuning_applies_on_glibc() -> None:
    assert tune_cpu_allocator() is True
    assert tune_cpu_allocator() is True  # idempotent


HUGE_PAGE_PROBE = """
import os, re, sys
from elir_cli.model.runtime import request_huge_pages
request_huge_pages()  # first: before torch allocates anything
import torch
x = torch.ones(64 * 2**20 // 4)  # a 64 MB buffer, like one activation of a 512 face
huge_kb = int(re.search(r"AnonHugePages:\\s+(\\d+)", open("/proc/self/smaps_rollup").read()).group(1))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge_kb)
"""

CLI_PROBE = """
import os, sys
from elir_cli.cli import main
assert "torch" not in sys.modules  # else the request would come too late
sys.argv = ["elir", "--version"]
try:
    main()
except SystemExit:
    pass
print(os.environ.get("THP_MEM_ALLOC_ENABLE"))
"""


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "ELIR_NO_THP")}
    env.update(extra)
    return env


def _probe_huge_pages(env_extra: dict[str, str]) -> tuple[str, int]:
    import subprocess

    out = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE], env=_clean_env(env_extra), capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


def _thp_mode() -> str:
    from pathlib import Path

    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    text = path.read_text() if path.exists() else "[never]"
    return text[text.index("[") + 1:text.index("]")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux facility")
def test_requested_huge_pages_back_large_tensors() -> None:
    if _thp_mode() == "never":
        pytest.skip("this kernel has transparent huge pages switched off (mode 'never')")
    setting, huge_kb = _probe_huge_pages({})
    assert setting == "1"
    assert huge_kb >= 32 * 1024  # most of the 64 MB buffer sits in 2 MB pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux facility")
def test_huge_pages_can_be_refused_and_a_users_setting_is_kept() -> None:
    setting, huge_kb = _probe_huge_pages({"ELIR_NO_THP": "1"})
    assert setting == "None"
    if _thp_mode() == "madvise":  # only then does the advice decide it
        assert huge_kb == 0
    assert _probe_huge_pages({"THP_MEM_ALLOC_ENABLE": "0"})[0] == "0"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux facility")
def test_the_elir_command_requests_huge_pages_and_importing_the_library_does_not() -> None:
    import subprocess

    run = lambda code: subprocess.run([sys.executable, "-c", code], env=_clean_env({}),  # noqa: E731
                                      capture_output=True, text=True, check=True).stdout.split()[-1]
    assert run(CLI_PROBE) == "1"
    assert run("import os, elir_cli; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))") == "None"  # no import side effect
