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


def render(report: dict[str, Any]) -> list[str]:
    """The report as text, a section per probe."""
    lines = [f"elir-cli {report['elir_cli']}, Python {report['python']}, {report['platform']}"]
    cpu = report["cpu"]
    lines.append("")
    if "error" in cpu:
        lines.append(f"CPU: {cpu['error']}")
    else:
        flags = cpu.get("flags") or {}
        listed = ", ".join(f for f, on in flags.items() if on) or "unknown (no /proc/cpuinfo)"
        lines += [f"CPU: {cpu['model']}, {cpu['cores']} cores, torch uses {cpu['torch_threads']} threads",
                  f"  instruction sets: {listed}",
                  f"  PyTorch dispatches: {cpu['torch_isa']}; native bf16: {_yes(cpu['native_bf16'])}"]
        if cpu.get("forced_isa"):
            lines.append(f"  forced: {cpu['forced_isa']}")
    gpus = report["gpus"]
    lines.append("")
    if "error" in gpus:
        lines.append(f"GPUs: {gpus['error']}")
    else:
        cuda = gpus["cuda"]
        found = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gb']} GB)" for d in cuda["devices"])
        lines.append(f"CUDA: {found or 'no GPU'} (PyTorch built for CUDA {cuda['torch_cuda'] or 'none'})")
        lines.append(f"Apple MPS: {_yes(gpus['mps'])}; Intel XPU: {_yes(gpus['xpu'])}")
    backends = report["backends"]
    lines.append("")
    if "error" in backends:
        lines.append(f"Backends: {backends['error']}")
    else:
        ov, ort = backends["openvino"], backends["onnxruntime"]
        lines.append(f"PyTorch {backends['torch']}")
        missing = 'not installed (pip install "elir-cli[{}]")'
        lines.append(f"OpenVINO: {ov['version'] or missing.format('openvino')}"
                     + (f", devices {', '.join(ov['devices'])}" if ov.get("devices") else ""))
        lines.append(f"ONNX Runtime: {ort['version'] or missing.format('onnx')}"
                     + (f", providers {', '.join(ort['providers'])}" if ort.get("providers") else ""))
        lines.append(f"spandrel: {backends['spandrel'] or 'not installed'}")
    precision = report["precision"]
    lines.append("")
    if "error" in precision:
        lines.append(f"Precision: {precision['error']}")
    else:
        for device, info in precision.items():
            lines.append(f"--precision auto on {device}: {info['auto']} (supported: {', '.join(info['supported'])})")
            for task, choice in info["tasks"].items():
                lines.append(f"  {task:11} {choice['auto'] or '-':5} {choice['why']}")
    storage = report["storage"]
    lines.append("")
    if "error" in storage:
        lines.append(f"Storage: {storage['error']}")
    else:
        for name, folder in storage["folders"].items():
            size = f"{folder['bytes'] / 1e6:.1f} MB" if folder["exists"] else "absent"
            lines.append(f"{name}: {folder['path']} ({size})")
        cached = [t for t, p in storage["weights"].items() if p]
        lines.append(f"weights cached: {', '.join(cached) or 'none'}; offline: {_yes(storage['offline'])}")
    face = report.get("one_face")
    if face:
        lines.append("")
        if "error" in face:
            lines.append(f"One face: {face['error']}")
        else:
            lines.append(f"One {face['task']} face on {face['device']} at {face['precision']} ({face['weights']} "
                         f"weights): first {face['first_ms']:.0f} ms, then {face['steady_ms']:.0f} ms "
                         f"(median of {face['runs']})")
    return lines
