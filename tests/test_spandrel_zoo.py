"""tests/helpers/spandrel_zoo.py covers every architecture of the installed spandrel, and
spandrel's registry recognises each of its state dicts as the architecture it was built as."""

from __future__ import annotations

import pytest

spandrel = pytest.importorskip("spandrel", reason="the spandrel zoo needs spandrel: pip install -e '.[bench]'")

from tests.helpers.spandrel_zoo import arch_state_dicts, built, uncovered


def _first_detected(state_dict: dict) -> str | None:
    """The architecture spandrel picks: the first, in its detection order, whose detect accepts."""
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.detect(state_dict):
            return str(support.architecture.id)
    return None


def test_every_registered_architecture_has_a_state_dict() -> None:
    missing = uncovered()
    assert not missing, "no state dict in the zoo for:\n" + "\n".join(f"  {a}: {why}" for a, why in missing.items())
    registered = {str(s.architecture.id) for s in spandrel.MAIN_REGISTRY.architectures()}
    assert {arch for arch, _ in arch_state_dicts()} == registered


def test_spandrel_detects_each_state_dict_as_its_own_architecture() -> None:
    wrong = {}
    for arch, sd in arch_state_dicts():
        own = spandrel.MAIN_REGISTRY[arch].detect(sd)
        first = _first_detected(sd)
        if not own or first != arch:
            wrong[arch] = f"own detect {own}, registry picks {first}"
    assert not wrong, wrong


def test_spandrel_loads_each_cpu_state_dict_as_its_own_architecture() -> None:
    """The meta-device entries (GFPGAN, LaMa) have no data to load; the rest are real
    checkpoints of small instances. ``load`` gets a copy: some architectures edit the dict."""
    wrong = {}
    for spec, sd in built():
        if spec.device == "meta" or not isinstance(sd, dict):
            continue
        try:
            loaded = str(spandrel.MAIN_REGISTRY.load(dict(sd)).architecture.id)
        except Exception as e:
            loaded = f"{type(e).__name__}: {e}"
        if loaded != spec.arch:
            wrong[f"{spec.arch} ({spec.model})"] = loaded
    assert not wrong, wrong


def test_hyper_parameters_are_small_but_not_degenerate() -> None:
    """No tensor without elements (a size cut below what the architecture supports), and the
    CPU-built entries together stay under 20M parameters."""
    empty = [f"{arch}: {key}" for arch, sd in arch_state_dicts() for key, t in sd.items() if t.numel() == 0]
    assert not empty, empty
    on_cpu = sum(t.numel() for _, sd in arch_state_dicts() for t in sd.values() if t.device.type == "cpu")
    assert on_cpu < 20_000_000
