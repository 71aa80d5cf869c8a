"""Rebuild the golden checkpoints from their small description files.

The authors' ``tiny_k3.pth`` and ``tiny_k5_overparam.ckpt`` are 18 and 30 MB;
their random weights are re-drawn here bit for bit from ``<case>.weights.tsv``
and the seed in ``cases.json`` (rule in the format README), so the suite
carries only a few hundred kB.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from elir_cli.model.config import ModelConfig
from tests.helpers import DATA

FORMAT = DATA / "elir-format"
TASKS = ("bfr", "sr", "denoising", "inpainting", "bsr")
CKPT_PREFIX_GROUPS = {"enc.": "state_dict_enc", "mmse.": "state_dict_mmse",
                      "fmir.": "state_dict_fmir", "dec.": "state_dict_dec"}


def cases() -> dict[str, dict]:
    return json.loads((FORMAT / "cases.json").read_text())


def case_config(case: str) -> ModelConfig:
    """The architecture of golden ``case`` (its checkpoint does not carry one)."""
    c = cases()[case]
    return ModelConfig(k_steps=c["k_steps"], sigma_s=c["sigma_s"], hid_channels=c["hid_channels"],
                       n_mid_blocks=c["n_mid_blocks"], rrdb_c_hid=c["rrdb_c_hid"], n_rrdb=c["n_rrdb"],
                       ch_mult=tuple(c["ch_mult"]), t_emb_dim=c["t_emb_dim"],
                       latent_channels=c["latent_channels"])


def draw_weights(case: str) -> dict[str, torch.Tensor]:
    """Re-draw the random tensors of ``case`` in file order."""
    g = torch.Generator().manual_seed(cases()[case]["weights_seed"])
    out: dict[str, torch.Tensor] = {}
    for line in (FORMAT / f"{case}.weights.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape_text = line.split("\t")[:2]
        shape = tuple(int(s) for s in shape_text.split("x"))
        if len(shape) == 1 and name.endswith("block.0.weight"):
            tensor = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            tensor = 0.05 * torch.randn(shape, generator=g)
        else:
            tensor = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        out[name] = tensor
    return out


def write_pth(case: str, path: Path) -> Path:
    torch.save(draw_weights(case), path)
    return path


def write_ckpt(case: str, path: Path) -> Path:
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in CKPT_PREFIX_GROUPS.values()}
    for name, tensor in draw_weights(case).items():
        prefix = name.split(".", 1)[0] + "."
        groups[CKPT_PREFIX_GROUPS[prefix]][name[len(prefix):]] = tensor
    torch.save(groups, path)
    return path


def expected(case: str) -> dict[str, torch.Tensor]:
    return load_file(str(FORMAT / f"{case}.expected.safetensors"))


def released_keys(task: str) -> tuple[list[tuple[str, tuple[int, ...]]], int, int]:
    """(name, shape) rows of a released checkpoint, its tensor count and parameters."""
    rows, count, params = [], -1, -1
    for line in (FORMAT / f"{task}.keys.tsv").read_text().splitlines():
        if line.startswith("#"):
            parts = line.lstrip("# ").replace(",", "").split()
            count, params = int(parts[0]), int(parts[2])
            continue
        name, shape_text = line.split("\t")[:2]
        rows.append((name, tuple(int(s) for s in shape_text.split("x"))))
    return rows, count, params
