"""int8 / int4 weight-only quantisation: round trips, storage ratios, export-friendly forward."""

import pytest
import torch
from torch import nn

from mobile_peft.core.errors import ConfigError
from mobile_peft.quant import QuantLinear, backbone_bytes, linear_weight, quantize_model

SHAPES = [(64, 64), (128, 64), (64, 128), (32, 96)]


@pytest.mark.parametrize("shape", SHAPES)
def test_int8_round_trip_error_is_within_half_a_step(shape):
    torch.manual_seed(0)
    linear = nn.Linear(shape[1], shape[0])
    q = QuantLinear.from_linear(linear, "int8")
    w, wq = linear.weight.detach(), q.dequantized_weight()
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((w - wq).abs() <= step / 2 + 1e-7).all()
    assert q.qweight.dtype == torch.int8 and q.scales.shape == (shape[0],)


@pytest.mark.parametrize("shape", SHAPES)
def test_int4_round_trip_error_is_within_half_a_step_per_group(shape):
    torch.manual_seed(0)
    linear = nn.Linear(shape[1], shape[0], bias=False)
    q = QuantLinear.from_linear(linear, "int4")
    w, wq = linear.weight.detach(), q.dequantized_weight()
    groups = w.reshape(shape[0], -1, q.group_size)
    step = (groups.abs().amax(dim=2, keepdim=True) / 7).half().float()
    err = (w - wq).reshape_as(groups).abs()
    assert (err <= step / 2 + 1e-6).all()
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (shape[0], shape[1] // 2)


def test_int4_packs_even_column_in_low_nibble():
    q = QuantLinear(4, 1, bias=False, mode="int4", group_size=4)
    q.quantize_(torch.tensor([[7.0, -8.0, 0.0, 1.0]]))  # scale 8/7 -> q = 6, -7, 0, 1
    values = q.qweight.int()
    low, high = values & 15, values >> 4
    assert low.tolist() == [[6 + 8, 0 + 8]] and high.tolist() == [[-7 + 8, 1 + 8]]


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_forward_matches_linear_with_dequantised_weight(mode):
    torch.manual_seed(1)
    linear = nn.Linear(64, 32)
    q = QuantLinear.from_linear(linear, mode)
    x = torch.randn(3, 5, 64)
    expected = nn.functional.linear(x, q.dequantized_weight(), linear.bias)
    torch.testing.assert_close(q(x), expected)
    assert torch.equal(linear_weight(q), q.dequantized_weight())
    assert not list(q.parameters()), "a quantised layer has nothing trainable"


@pytest.mark.parametrize("mode,limit", [("int8", 0.27), ("int4", 0.15)])
def test_storage_ratio_against_fp32(mode, limit):
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128))
    fp32 = backbone_bytes(model).linear
    quantize_model(model, mode)
    ratio = backbone_bytes(model).linear / fp32
    assert ratio <= limit, ratio


def test_quantize_model_replaces_only_linears_and_none_is_a_no_op():
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    assert quantize_model(model, "none") == 0
    assert quantize_model(model, "int8") == 2
    assert isinstance(model[0], QuantLinear) and isinstance(model[1], nn.LayerNorm)


def test_int4_falls_back_to_per_channel_when_group_does_not_divide():
    q = QuantLinear.from_linear(nn.Linear(40, 8), "int4")
    assert q.group_size == 40 and q.scales.shape == (8, 1)


def test_bad_modes_and_odd_widths_are_clear_errors():
    with pytest.raises(ConfigError, match="quant='int3'"):
        quantize_model(nn.Linear(4, 4), "int3")
    with pytest.raises(ConfigError, match="even"):
        QuantLinear.from_linear(nn.Linear(5, 4), "int4")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantised_layer_exports_without_tensor_subclasses(mode):
    q = QuantLinear.from_linear(nn.Linear(64, 16), mode)
    ep = torch.export.export(q, (torch.randn(2, 64),), strict=False)
    x = torch.randn(2, 64)
    torch.testing.assert_close(ep.module()(x), q(x))


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("bias", [True, False])
def test_row_blocks_compute_the_same_layer(mode, bias):
    """A layer past ``block_bytes`` dequantises in row blocks: the blocks cover every row once,
    none holds more than ``block_bytes`` of fp32, and output and input gradient match the whole
    weight's."""
    torch.manual_seed(2)
    q = QuantLinear.from_linear(nn.Linear(64, 100, bias=bias), mode)
    x = torch.randn(3, 64, requires_grad=True)
    whole = q(x)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), x)
    q.block_bytes = 64 * 4 * 30  # 30 rows of fp32
    blocks = q.row_blocks()
    assert len(blocks) == 4 and [b.start for b in blocks] == [0, 25, 50, 75] and blocks[-1].stop == 100
    assert all((b.stop - b.start) * 64 * 4 <= q.block_bytes for b in blocks)
    torch.testing.assert_close(torch.cat([q.dequantized_weight(b) for b in blocks]), q.dequantized_weight(), rtol=0, atol=0)
    blocked = q(x)
    (grad_blocked,) = torch.autograd.grad(blocked.square().sum(), x)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(grad_blocked, grad_whole)
    assert "row_blocks=4" in repr(q)


def test_small_layers_and_no_limit_dequantise_whole():
    q = QuantLinear(64, 100, bias=False, mode="int8")
    assert q.row_blocks() == [slice(0, 100)]  # 25.6 KB of fp32: far below the default block
    q.block_bytes = None
    assert q.row_blocks() == [slice(0, 100)]
