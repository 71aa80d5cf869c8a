"""The package's modules agree with an independent functional implementation."""

from __future__ import annotations

import pytest
import torch

from elir_cli.model.checkpoint import build_model, read_checkpoint
from tests.helpers import goldens
from tests.helpers.reference_elir import reference_forward


@pytest.mark.parametrize("case", ["tiny_k3", "tiny_k5_overparam"])
def test_modules_match_the_functional_reference(case: str, tmp_path) -> None:
    write = goldens.write_ckpt if "overparam" in case else goldens.write_pth
    ckpt = read_checkpoint(write(case, tmp_path / "w"))
    ckpt.config = goldens.case_config(case)
    model = build_model(ckpt)
    e = goldens.expected(case)
    with torch.inference_mode():
        ours = model(e["x"], noise=e["eps"])
        ref = reference_forward(ckpt.state_dict, e["x"], e["eps"],
                                k_steps=ckpt.config.k_steps, sigma_s=ckpt.config.sigma_s)
    assert (ref - e["y"]).abs().max().item() < 1e-5  # the reference itself is right
    assert (ours - ref).abs().max().item() < 1e-5
