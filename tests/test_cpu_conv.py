"""The fused oneDNN conv path against plain PyTorch, and when it must stand aside."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from elir_cli.model import cpu_conv
from elir_cli.model.cpu_conv import conv2d_act, fused_conv_available
from tests.helpers.tiny import tiny_model

CL = torch.channels_last
needs_onednn = pytest.mark.skipif(not fused_conv_available(),
                                  reason="this PyTorch build has no oneDNN fused-conv operators")


def plain(x: torch.Tensor, conv: nn.Conv2d, act: str, add: torch.Tensor | None) -> torch.Tensor:
    h = F.conv2d(x.contiguous(), conv.weight, conv.bias, conv.stride, conv.padding)
    if add is not None:
        h = h + add
    return {"none": h, "relu": F.relu(h), "silu": F.silu(h)}[act]


def onednn_calls(fn) -> int:  # type: ignore[no-untyped-def]
    """How many fused oneDNN conv calls ``fn()`` makes (from the profiler's op names)."""
    return op_calls(fn, "mkldnn::_convolution_pointwise")


@needs_onednn
@pytest.mark.parametrize("act", ["none", "relu", "silu"])
@pytest.mark.parametrize("with_add", [False, True])
@pytest.mark.parametrize(("kernel", "stride", "bias"), [(3, 1, True), (3, 2, False), (1, 1, True)])
def test_fused_conv_equals_conv_then_ops(act: str, with_add: bool, kernel: int, stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 40, kernel, stride=stride, padding=kernel // 2, bias=bias).to(memory_format=CL)
    x = torch.randn(2, 24, 19, 26).contiguous(memory_format=CL)
    with torch.inference_mode():
        out_shape = conv(x).shape
        add = torch.randn(out_shape).contiguous(memory_format=CL) if with_add else None
        expected = plain(x, conv, act, add)
        assert onednn_calls(lambda: conv2d_act(x, conv, act, add)) == 1
        got = conv2d_act(x, conv, act, add)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_a_per_channel_shift_is_folded_into_the_bias_and_a_batched_one_added(bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 40, 3, padding=1, bias=bias).to(memory_format=CL)
    x = torch.randn(2, 24, 19, 26).contiguous(memory_format=CL)
    add = torch.randn(2, 40, 19, 26).contiguous(memory_format=CL)
    with torch.inference_mode():
        for shift in (torch.randn(1, 40), torch.randn(2, 40)):
            expected = plain(x, conv, "none", add) + shift[:, :, None, None]
            got = conv2d_act(x, conv, "none", add, shift=shift)
            assert (got - expected).abs().max().item() < 1e-5
        one = torch.randn(1, 40)  # one shift for the batch: a single fused call, no separate add
        assert onednn_calls(lambda: conv2d_act(x, conv, "none", add, shift=one)) == 1
        assert op_calls(lambda: conv2d_act(x, conv, "none", add, shift=one), "aten::add_") == 0


def op_calls(fn, prefix: str) -> int:  # type: ignore[no-untyped-def]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith(prefix))


def small_conv(seed: int = 0, **kwargs) -> nn.Conv2d:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return nn.Conv2d(8, 8, 3, padding=kwargs.pop("padding", 1), **kwargs).to(memory_format=CL)


def cl_input(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=CL)


@needs_onednn
def test_a_weight_is_packed_once_and_again_after_an_in_place_write() -> None:
    conv, x, y = small_conv(), cl_input(1, 8, 16, 16), cl_input(2, 8, 24, 20)
    with torch.inference_mode():
        before = conv2d_act(x, conv)
        # other shapes reuse the one packed weight (oneDNN reorders it for them if it must)
        assert op_calls(lambda: (conv2d_act(x, conv), conv2d_act(y, conv)), "mkldnn::_reorder_convolution_weight") == 0
        assert (conv2d_act(y, conv) - plain(y, conv, "none", None)).abs().max().item() < 1e-5
    with torch.no_grad():
        conv.weight.mul_(-1)  # an in-place write, as load_state_dict does
    with torch.inference_mode():
        assert op_calls(lambda: conv2d_act(x, conv), "mkldnn::_reorder_convolution_weight") == 1
        after = conv2d_act(x, conv)
        assert (after - plain(x, conv, "none", None)).abs().max().item() < 1e-5
    assert not torch.allclose(before, after)


@needs_onednn
def test_a_replaced_weight_is_never_mistaken_for_the_packed_one() -> None:
    # A new weight of the same size may land at the freed address of the packed one, with the
    # same version (0): the cache keeps the packed weight's storage alive, so it cannot.
    from elir_cli.model.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # as in the CLI: freed blocks stay in the heap, so addresses come back often
    x = cl_input(1, 64, 16, 16)
    fresh = lambda: {"weight": (torch.randn(64, 64, 3, 3) / 24).contiguous(memory_format=CL),  # noqa: E731
                     "bias": torch.randn(64)}
    for trial in range(20):
        conv = nn.Conv2d(64, 64, 3, padding=1)
        conv.load_state_dict(fresh(), assign=True)
        with torch.inference_mode():
            conv2d_act(x, conv)  # packs this weight
        conv.load_state_dict(fresh(), assign=True)  # frees it...
        conv.weight = nn.Parameter(fresh()["weight"])  # ...and this one may take its address
        with torch.inference_mode():
            assert (conv2d_act(x, conv) - plain(x, conv, "none", None)).abs().max().item() < 1e-4, trial


@needs_onednn
def test_writes_through_data_need_clear_packed_weights() -> None:
    conv, x = small_conv(), cl_input(1, 8, 16, 16)
    with torch.inference_mode():
        conv2d_act(x, conv)
    conv.weight.data.mul_(-1)  # .data bypasses the version counter: documented, and cleared by hand
    cpu_conv.clear_packed_weights()
    with torch.inference_mode():
        assert (conv2d_act(x, conv) - plain(x, conv, "none", None)).abs().max().item() < 1e-5


@needs_onednn
def test_a_model_built_in_inference_mode_runs_and_follows_new_weights() -> None:
    from elir_cli.model.runtime import prepare_model, resolve_runtime

    x, noise = torch.rand(1, 3, 32, 48), torch.randn(1, 16, 4, 6)
    with torch.inference_mode():  # weights become inference tensors (no version counter)
        fast = prepare_model(tiny_model(seed=0), resolve_runtime("cpu", "fp32"))
        got = fast(x, noise=noise)
        assert (got - tiny_model(seed=0)(x, noise=noise)).abs().max().item() < 1e-4
        fast.load_state_dict(tiny_model(seed=1).state_dict())
        again = fast(x, noise=noise)
        assert (again - tiny_model(seed=1)(x, noise=noise)).abs().max().item() < 1e-4


@needs_onednn
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's flags() context, not ours
def test_onednn_off_hooks_and_string_padding_take_the_plain_path() -> None:
    conv, x = small_conv(), cl_input(1, 8, 16, 16)
    with torch.inference_mode():
        with torch.backends.mkldnn.flags(enabled=False):
            assert onednn_calls(lambda: conv2d_act(x, conv, "relu")) == 0
        seen = []
        handle = conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        try:
            assert onednn_calls(lambda: conv2d_act(x, conv, "relu")) == 0
        finally:
            handle.remove()
        assert seen == [torch.Size([1, 8, 16, 16])]
        same = small_conv(padding="same")
        assert (conv2d_act(x, same, "silu") - plain(x, same, "silu", None)).abs().max().item() < 1e-5


@needs_onednn
def test_plain_path_under_autograd_autocast_and_nchw() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1).to(memory_format=CL)
    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=CL)
    out = conv2d_act(x, conv, "relu")  # autograd on: gradients must flow
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with torch.inference_mode():
        assert onednn_calls(lambda: conv2d_act(x.contiguous(), conv, "relu")) == 0  # NCHW input
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides the dtype: the plain path
            assert onednn_calls(lambda: conv2d_act(x, conv, "relu")) == 0
            assert conv2d_act(x, conv, "relu").dtype == torch.bfloat16


@needs_onednn
def test_prepared_model_runs_every_conv_fused_and_matches_the_plain_model() -> None:
    from elir_cli.model.runtime import prepare_model, resolve_runtime

    plain_model = tiny_model()
    fast = prepare_model(tiny_model(), resolve_runtime("cpu", "fp32"))
    x = torch.rand(1, 3, 64, 96)
    noise = torch.randn(1, 16, 8, 12)
    with torch.inference_mode():
        expected = plain_model(x, noise=noise)
        got = fast(x, noise=noise)
        calls = onednn_calls(lambda: fast(x, noise=noise))
    n_convs = sum(isinstance(m, nn.Conv2d) for m in fast.modules())
    n_upsample = sum(isinstance(m, nn.Upsample) for m in fast.dec.modules())  # done by a transposed conv
    k = fast.config.k_steps
    fmir_convs = sum(isinstance(m, nn.Conv2d) for m in fast.fmir.modules())
    assert calls == n_convs - n_upsample + (k - 1) * fmir_convs  # the vector field runs k times
    assert (got - expected).abs().max().item() < 1e-4
    with torch.inference_mode(), cpu_conv.plain_convs():
        assert onednn_calls(lambda: fast(x, noise=noise)) == 0
        assert (fast(x, noise=noise) - got).abs().max().item() < 1e-4
