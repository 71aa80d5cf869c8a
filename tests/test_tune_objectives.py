"""Our training objectives, AdamW and EMA compute what the ELIR authors' training code computes.

The numbers in ``tests/data/tune/authors_tiny_k3.safetensors`` were recorded from the authors'
``losses.py``, optimizer factory and ``ModelEMA`` (provenance: ``tests/data/tune/PROVENANCE.md``) on
the ``tiny_k3`` golden model with a frozen teacher, a 2 x 3 x 64 x 64 batch, fixed noise and
times, for the bfr and bsr training configs. Here the same model, teacher, batch, noise and
times go through ``elir_cli.tuning``.

Tolerances. Losses: 1e-5 absolute (they agree to ~3e-8). Weights after one AdamW step: 1e-5
absolute, elementwise, on the recorded tensors. AdamW's first step moves each weight by
``lr * g / (|g| + 1e-8)``, whatever the gradient's size, so it is checked for *every* trainable
tensor too, through the sum of its step: a single weight stepped the other way moves that sum by
2 lr, more than the tolerance of 1 lr. EMA: 1e-6 for the update itself (our EMA applied to the
authors' weights), 1e-5 end to end.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from elir_cli.model.elir import ElirModel
from elir_cli.tuning.objectives import (CFM, FM, L2_CFM_MSE, METHODS, ObjectiveConfig, Teacher,
                                        draw_noise, draw_times, objective, segment_ends)
from elir_cli.tuning.recipes import AUTHORS_RECIPES, STAGES, TRAINABLE
from elir_cli.tuning.trainable import ModelEMA, make_optimizer, set_trainable, train_step
from tests.helpers import DATA
from tests.helpers.goldens import case_config, draw_weights

GOLDEN = DATA / "tune" / "authors_tiny_k3.safetensors"
CASE = "tiny_k3"
TASKS = ("bfr", "bsr")
LOSS_TOL = 1e-5
WEIGHT_TOL = 1e-5
EMA_UPDATE_TOL = 1e-6
STEP_SUM_TOL_LR = 1.0  # per tensor, in units of lr (one weight stepped the wrong way: 2)
GRAD_REL_TOL = 3e-4  # relative to the tensor's largest gradient
GRAD_FLOOR = 1e-8  # gradients that are zero up to rounding (see the recorder's note)


@lru_cache(maxsize=1)
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(GOLDEN), "pt") as f:
        meta = f.metadata()
    return load_file(str(GOLDEN)), meta


def meta_json(key: str):
    return json.loads(golden()[1][key])


def model() -> ElirModel:
    m = ElirModel(case_config(CASE))
    m.load_state_dict(draw_weights(CASE), strict=True)
    return m


def teacher() -> Teacher:
    """The recorded teacher: tiny_k3's enc/dec plus a seeded jitter (rule in the file's metadata)."""
    rule = meta_json("teacher")
    g = torch.Generator().manual_seed(rule["seed"])
    state = {}
    for name, w in draw_weights(CASE).items():
        if not name.startswith(("enc.", "dec.")):
            continue
        if w.ndim == 1:
            d = 0.05 * torch.randn(w.shape, generator=g)
        else:
            d = torch.randn(w.shape, generator=g) / math.sqrt(math.prod(w.shape[1:]))
        prefix = "encoder." if name.startswith("enc.") else "decoder."
        state[prefix + name.split(".", 1)[1]] = w + rule["jitter"] * d
    t = Teacher()
    t.load_state_dict(state, strict=True)
    return t


def objective_config(task: str, method: str) -> ObjectiveConfig:
    fm = meta_json("configs")[task]["fm_cfg"]
    return ObjectiveConfig(segments=fm["k_steps"], sigma_s=fm["sigma_s"], method=method, dt=fm["dt"],
                           alpha=fm["alpha"], beta=fm["beta"], sigma_min=fm["sigma_min"])


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = golden()[0]
    return g["x_hq"], g["x_lq"]


def test_recipes_are_the_recorded_configs() -> None:
    """Our table of the authors' configs says what the recorder read from their yaml files."""
    for task in TASKS:
        recorded = meta_json("configs")[task]
        recipe = AUTHORS_RECIPES[task]
        assert recipe.lr == recorded["lr"] and recipe.ema_decay == recorded["ema_decay"]
        assert recipe.objective == objective_config(task, recorded["fm_cfg"]["method"])
    assert {r.trainable for r in AUTHORS_RECIPES.values()} == {("fmir", "mmse", "enc")}


@pytest.mark.parametrize("task", TASKS)
def test_optimizer_settings_equal_the_authors(task: str) -> None:
    """AdamW with the settings the authors' optimizer factory gave (lr from the config, the rest torch's)."""
    recorded = meta_json("configs")[task]["optimizer"]
    m = model()
    set_trainable(m)
    optimizer = make_optimizer(m, AUTHORS_RECIPES[task].lr)
    group = optimizer.param_groups[0]
    assert type(optimizer).__name__ == recorded.pop("class")
    assert {k: list(group[k]) if k == "betas" else group[k] for k in recorded} == recorded
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert len(group["params"]) == len(trainable) and all(a is b for a, b in zip(group["params"], trainable))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", TASKS)
def test_loss_equals_the_authors(task: str, method: str) -> None:
    g = golden()[0]
    pre = f"{task}.{method}."
    m = model()
    set_trainable(m)
    terms = objective(m, *batch(), objective_config(task, method), teacher=teacher(),
                      noise=g[pre + "noise"], times=g[pre + "t"])
    assert abs(terms.total.item() - g[pre + "loss"].item()) <= LOSS_TOL
    if method == L2_CFM_MSE:  # the parts add up as the authors weight them
        beta = objective_config(task, method).beta
        assert terms.total.item() == pytest.approx(
            (terms.coarse + (1 - beta) * terms.flow + beta * terms.pixel).item(), rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", TASKS)
def test_a_generator_draws_what_the_authors_code_drew(task: str, method: str) -> None:
    """Seeded like the authors' global RNG, a CPU generator draws their noise, then their times."""
    g = golden()[0]
    pre = f"{task}.{method}."
    gen = torch.Generator().manual_seed(meta_json("loss_seeds")[method])
    noise = draw_noise(g[pre + "noise"], gen)
    dt = 0.0 if method == FM else objective_config(task, method).dt
    times = draw_times(2, dt=dt, generator=gen)
    torch.testing.assert_close(noise, g[pre + "noise"], rtol=0, atol=1e-6)
    torch.testing.assert_close(times, g[pre + "t"], rtol=0, atol=1e-7)


def test_segment_ends() -> None:
    t = torch.tensor([0.0, 0.1, 0.2, 0.2001, 0.79, 0.95]).reshape(-1, 1, 1, 1)
    ends = segment_ends(t, 5).reshape(-1)
    torch.testing.assert_close(ends, torch.tensor([0.2, 0.2, 0.2, 0.4, 0.8, 1.0]))


def one_step(task: str):
    """The authors' step on a fresh model: (model, ema, weights before, gradients)."""
    g = golden()[0]
    lr = meta_json("configs")[task]["lr"]
    m = model()
    names = set_trainable(m)
    assert names == meta_json("trainable_keys")
    optimizer = make_optimizer(m, lr)
    ema = ModelEMA(m, decay=meta_json("configs")[task]["ema_decay"])
    w0 = {k: v.detach().clone() for k, v in m.state_dict().items()}
    pre = f"{task}.{L2_CFM_MSE}."
    grads: dict[str, torch.Tensor] = {}
    hooks = [p.register_post_accumulate_grad_hook(lambda p, n=n: grads.__setitem__(n, p.grad.clone()))
             for n, p in m.named_parameters() if p.requires_grad]
    train_step(m, optimizer, *batch(), objective_config(task, L2_CFM_MSE), teacher=teacher(), ema=ema,
               noise=g[pre + "noise"], times=g[pre + "t"])
    for h in hooks:
        h.remove()
    return m, ema, w0, grads


@pytest.mark.parametrize("task", TASKS)
def test_one_adamw_step_and_ema_update_equal_the_authors(task: str) -> None:
    g = golden()[0]
    lr = meta_json("configs")[task]["lr"]
    keys = meta_json("trainable_keys")
    m, ema, w0, grads = one_step(task)
    w1, e1 = m.state_dict(), ema.state_dict()
    assert sorted(grads) == sorted(keys), "every trainable tensor gets a gradient"

    for k in meta_json("full_tensors"):
        want = g[f"{task}.grad.{k}"]
        tol = GRAD_REL_TOL * want.abs().max().item() + GRAD_FLOOR
        assert (grads[k] - want).abs().max().item() <= tol, k
        # AdamW's first step moves each weight by lr * g / (|g| + eps): the same wherever the gradient
        # is clear of its rounding (the kernels of another ISA cannot flip its sign); where the gradient
        # is rounding noise, by up to 2 lr either way (with AVX2 forced, against goldens recorded with
        # AVX-512: 1.7e-5 in one bsr tensor).
        steady = want.abs() > 2 * tol
        for got, recorded in ((w1[k], g[f"{task}.w1.{k}"]), (e1[k], g[f"{task}.ema1.{k}"])):
            diff = (got - recorded).abs()
            assert diff[steady].max().item() <= WEIGHT_TOL, k
            assert diff.max().item() <= 2 * lr + WEIGHT_TOL, k
    for k in meta_json("w1_only_tensors"):
        assert (w1[k] - g[f"{task}.w1.{k}"]).abs().max().item() <= WEIGHT_TOL, k

    f64 = {k: w1[k].double() for k in keys}
    step_sum = torch.stack([(f64[k] - w0[k].double()).sum() / lr for k in keys])
    off = (step_sum - g[f"{task}.step.delta_sum_over_lr"]).abs()
    assert off.max().item() <= STEP_SUM_TOL_LR, keys[int(off.argmax())]
    grad_l2 = torch.stack([grads[k].double().norm() for k in keys])
    want_l2 = g[f"{task}.step.grad_l2"]
    assert ((grad_l2 - want_l2).abs() <= GRAD_REL_TOL * want_l2 + GRAD_FLOOR).all()
    ema_sum = torch.stack([e1[k].double().sum() for k in keys])
    assert ((ema_sum - g[f"{task}.step.ema_sum"]).abs() <= STEP_SUM_TOL_LR * lr).all()


@pytest.mark.parametrize("task", TASKS)
def test_ema_update_equals_the_authors_given_their_weights(task: str) -> None:
    g = golden()[0]
    m = model()
    set_trainable(m)
    ema = ModelEMA(m, decay=meta_json("configs")[task]["ema_decay"])
    assert ema.decay_at(1) == pytest.approx(g[f"{task}.step.ema_decay_used"].item(), rel=1e-12)
    full = meta_json("full_tensors")
    live = dict(m.named_parameters())
    with torch.no_grad():
        for k in full:
            live[k].copy_(g[f"{task}.w1.{k}"])
    ema.update(m)
    averaged = ema.state_dict()
    for k in full:
        assert (averaged[k] - g[f"{task}.ema1.{k}"]).abs().max().item() <= EMA_UPDATE_TOL, k


def test_frozen_parts_stay_put_and_the_loss_falls() -> None:
    """Six bfr steps (the authors' lr) on one image, fixed noise and time: the loss more than
    halves (0.088 -> 0.015 when recorded), and the decoder and the teacher never move."""
    g = golden()[0]
    m = model()
    names = set_trainable(m)
    assert not any(n.startswith("dec.") for n in names) and m.enc.training and not m.dec.training
    t = teacher()
    dec_before = {k: v.clone() for k, v in m.dec.state_dict().items()}
    t_before = {k: v.clone() for k, v in t.state_dict().items()}
    enc_before = m.enc.layers[0].weight.detach().clone()
    recipe = AUTHORS_RECIPES["bfr"]
    optimizer = make_optimizer(m, recipe.lr)
    ema = ModelEMA(m, decay=recipe.ema_decay)
    pre = f"bfr.{L2_CFM_MSE}."
    x_hq, x_lq = (x[:1] for x in batch())
    noise, times = g[pre + "noise"][:1], g[pre + "t"][:1]
    losses = [train_step(m, optimizer, x_hq, x_lq, recipe.objective, teacher=t, ema=ema, noise=noise,
                         times=times).total.item() for _ in range(6)]
    assert losses[-1] < 0.5 * losses[0], losses
    for k, v in m.dec.state_dict().items():
        assert torch.equal(v, dec_before[k]), k
        assert torch.equal(ema.model.dec.state_dict()[k], dec_before[k]), k
    for k, v in t.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    assert not torch.equal(m.enc.layers[0].weight, enc_before), "the encoder trains"
    assert all(not p.requires_grad for p in ema.model.parameters())


def test_flow_only_losses_train_only_the_vector_field() -> None:
    g = golden()[0]
    for method in (FM, CFM):
        m = model()
        set_trainable(m)
        pre = f"bfr.{method}."
        objective(m, *batch(), objective_config("bfr", method), noise=g[pre + "noise"],
                  times=g[pre + "t"]).total.backward()
        with_grad = {n.split(".", 1)[0] for n, p in m.named_parameters() if p.grad is not None}
        assert with_grad == {"fmir"}, method


def test_set_trainable_per_part() -> None:
    m = model()
    assert set_trainable(m, ("fmir",)) == [n for n, _ in m.named_parameters() if n.startswith("fmir.")]
    assert m.fmir.training and not m.mmse.training
    assert set(TRAINABLE) < set(STAGES)
    with pytest.raises(ValueError, match="parts"):
        set_trainable(m, ("unet",))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="method"):
        ObjectiveConfig(segments=5, sigma_s=0.1, method="l2_loss")
    with pytest.raises(ValueError, match="segments"):
        ObjectiveConfig(segments=0, sigma_s=0.1)
    m = model()
    x = torch.rand(2, 3, 64, 64)
    config = objective_config("bfr", CFM)
    with pytest.raises(ValueError, match="noise"):
        objective(m, x, x, config, noise=torch.zeros(2, 16, 4, 4))
    with pytest.raises(ValueError, match="multiples of 32"):
        objective(m, x[..., :48], x[..., :48], config)
    with pytest.raises(ValueError, match="teacher"):
        objective(m, x, x, objective_config("bfr", L2_CFM_MSE))
