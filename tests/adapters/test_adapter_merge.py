"""merge() equals the unmerged forward; unmerge() gives back the original base bit-exactly."""

import pytest
import torch
from torch import nn

from mobile_peft.adapters import HydraLayer, LoraConfig, LoraLayer, adapter_layers, apply_adapters
from mobile_peft.core.errors import ConfigError
from mobile_peft.quant import QuantLinear

# (in, out) of a GQA decoder layer (hidden 64, 4 heads, 2 kv heads, mlp 128) and of a CLIP
# vision layer (square attention, non-square MLP).
SHAPES = {
    "q_proj": (64, 64),
    "k_proj": (64, 32),
    "v_proj": (64, 32),
    "o_proj": (64, 64),
    "gate_proj": (64, 128),
    "up_proj": (64, 128),
    "down_proj": (128, 64),
    "vision_attn": (32, 32),
    "vision_fc1": (32, 48),
    "vision_fc2": (48, 32),
}
BASES = ["linear", "linear_nobias", "int8", "int4"]


def _layer(method: str, base: nn.Module) -> nn.Module:
    if method == "lora":
        return LoraLayer(base, r=6, alpha=12)
    return HydraLayer(base, r_parallel=6, r_sequential=4, alpha_parallel=12, alpha_sequential=8)


def _soft_masks(layer) -> None:
    for name, slot in layer.rank_slots().items():
        mask = torch.ones(slot.r_max)
        mask[1] = 0.0
        mask[-1] = 0.5
        layer.set_rank_mask(name, mask)


@pytest.mark.parametrize("method", ["lora", "hydra"])
@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_merge_matches_and_unmerge_restores(method, kind, shape, make_base, randomize):
    fan_in, fan_out = shape
    base = make_base(kind, fan_in, fan_out)
    layer = _layer(method, base)
    randomize(layer, std=0.1)
    _soft_masks(layer)
    x = torch.randn(4, 7, fan_in)
    expected = layer(x)
    base_out = base(x)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}

    layer.merge()
    assert layer.merged and type(layer.base_layer) is nn.Linear
    # fp32 merged weights differ from the two-step forward only by rounding: |y| is O(1) here, fp32
    # epsilon is 1.2e-7 and a dot product of <= 128 terms accumulates well under 1e-5 of error.
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    has_bias = layer.base_layer.bias is not None
    assert has_bias == (base.bias is not None)  # without b0 the Hydra bias b' is exactly 0: no bias
    with pytest.raises(ConfigError, match="unmerge"):
        layer.set_rank(next(iter(layer.rank_slots())), 1)
    layer.merge()  # a second merge is a no-op

    layer.unmerge()
    assert not layer.merged and layer.base_layer is base
    assert all(torch.equal(base_state[k], v) for k, v in base.state_dict().items())
    assert torch.equal(layer(x), expected) and torch.equal(base(x), base_out)
    if isinstance(base, QuantLinear):
        assert base.qweight.dtype in (torch.int8, torch.uint8)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_hydra_merge_in_float64(shape, make_base, randomize):
    fan_in, fan_out = shape
    layer = _layer("hydra", make_base("float64", fan_in, fan_out))
    randomize(layer, std=0.3)
    _soft_masks(layer)
    x = torch.randn(4, fan_in, dtype=torch.float64)
    expected = layer(x)
    layer.merge()
    assert layer.base_layer.weight.dtype == torch.float64
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=1e-10)


def test_merge_whole_model_and_unmerge(llama, randomize_model):
    apply_adapters(llama, LoraConfig(r=4, target_modules=r".*_proj"))
    randomize_model(llama, std=0.05)
    ids = torch.randint(0, 100, (2, 6))
    with torch.no_grad():
        expected = llama(ids).logits
        for layer in adapter_layers(llama).values():
            layer.merge()
        torch.testing.assert_close(llama(ids).logits, expected, atol=1e-5, rtol=1e-5)
        for layer in adapter_layers(llama).values():
            layer.unmerge()
        assert torch.equal(llama(ids).logits, expected)
