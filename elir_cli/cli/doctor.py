"""``elir doctor``: this machine and what elir-cli does on it, to paste into a bug report."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

DOCTOR_EPILOG = """\b
Examples:
  elir doctor                  # the report, with the time of one face (a few seconds)
  elir doctor --json > doctor.json
  elir doctor --no-timing      # no model is run
"""


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts and bug reports.")] = False,
    timing: Annotated[bool, typer.Option("--timing/--no-timing", help="Time one face at --precision auto "
                                         "(first call and steady state).")] = True,
) -> None:
    """Show the CPU's instruction sets, the GPUs, the installed backends, what --precision auto
    picks per task, the caches and their sizes, and the time of one face."""
    from elir_cli.runner.doctor import diagnose

    report = diagnose(timing=timing)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    for line in render(report):
        typer.echo(line)


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _cpu(cpu: dict[str, Any]) -> list[str]:
    listed = ", ".join(f for f, on in (cpu.get("flags") or {}).items() if on) or "unknown (no /proc/cpuinfo)"
    lines = [f"CPU: {cpu['model']}, {cpu['cores']} cores, torch uses {cpu['torch_threads']} threads",
             f"  instruction sets: {listed}",
             f"  PyTorch dispatches: {cpu['torch_isa']}; native bf16: {_yes(cpu['native_bf16'])}"]
    return lines + ([f"  forced: {cpu['forced_isa']}"] if cpu.get("forced_isa") else [])


def _gpus(gpus: dict[str, Any]) -> list[str]:
    cuda = gpus["cuda"]
    found = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gb']} GB)" for d in cuda["devices"])
    return [f"CUDA: {found or 'no GPU'} (PyTorch built for CUDA {cuda['torch_cuda'] or 'none'})",
            f"Apple MPS: {_yes(gpus['mps'])}; Intel XPU: {_yes(gpus['xpu'])}"]


def _backends(backends: dict[str, Any]) -> list[str]:
    ov, ort = backends["openvino"], backends["onnxruntime"]
    missing = 'not installed (pip install "elir-cli[{}]")'
    return [f"PyTorch {backends['torch']}",
            f"OpenVINO: {ov['version'] or missing.format('openvino')}"
            + (f", devices {', '.join(ov['devices'])}" if ov.get("devices") else ""),
            f"ONNX Runtime: {ort['version'] or missing.format('onnx')}"
            + (f", providers {', '.join(ort['providers'])}" if ort.get("providers") else ""),
            f"spandrel: {backends['spandrel'] or 'not installed'}"]


def _precision(precision: dict[str, Any]) -> list[str]:
    lines = []
    for device, info in precision.items():
        lines.append(f"--precision auto on {device}: {info['auto']} (supported: {', '.join(info['supported'])})")
        lines += [f"  {task:11} {choice['auto'] or '-':5} {choice['why']}"
                  + (f"; int8: {choice['int8']}" if choice.get("int8") else "") for task, choice in info["tasks"].items()]
    return lines


def _storage(storage: dict[str, Any]) -> list[str]:
    lines = [f"{name}: {folder['path']} ({folder['bytes'] / 1e6:.1f} MB)" if folder["exists"]
             else f"{name}: {folder['path']} (absent)" for name, folder in storage["folders"].items()]
    cached = [t for t, p in storage["weights"].items() if p]
    return lines + [f"weights cached: {', '.join(cached) or 'none'}; offline: {_yes(storage['offline'])}"]


def _face(face: dict[str, Any]) -> list[str]:
    return [f"One {face['task']} face on {face['device']} at {face['precision']} ({face['weights']} weights): "
            f"first {face['first_ms']:.0f} ms, then {face['steady_ms']:.0f} ms (median of {face['runs']})"]


SECTIONS = (("cpu", "CPU", _cpu), ("gpus", "GPUs", _gpus), ("backends", "Backends", _backends),
            ("precision", "Precision", _precision), ("storage", "Storage", _storage), ("one_face", "One face", _face))


def render(report: dict[str, Any]) -> list[str]:
    """The report as text, a section per probe (a probe that failed shows its error)."""
    lines = [f"elir-cli {report['elir_cli']}, Python {report['python']}, {report['platform']}"]
    for key, title, show in SECTIONS:
        part = report.get(key)
        if part is None:  # not asked for (--no-timing)
            continue
        lines.append("")
        lines += [f"{title}: {part['error']}"] if "error" in part else show(part)
    return lines
