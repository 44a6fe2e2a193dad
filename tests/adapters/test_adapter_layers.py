"""Forward formulas, rank masks and the trainable-parameter protocol of LoRA and Hydra layers."""

import pytest
import torch
from torch import nn

from mobile_peft.adapters import (
    HydraConfig,
    HydraLayer,
    LoraConfig,
    LoraLayer,
    adapter_layers,
    adapter_parameters,
    apply_adapters,
    mark_only_adapters_trainable,
)
from mobile_peft.core.errors import ConfigError
from mobile_peft.quant import QuantLinear, quantize_model


def _x(fan_in: int, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 5, fan_in, dtype=dtype)


def test_lora_starts_equal_to_base_and_follows_the_formula(make_base, randomize):
    base = make_base("linear", 64, 32)
    layer = LoraLayer(base, r=4, alpha=8)
    x = _x(64)
    assert torch.equal(layer(x), base(x))  # B = 0
    randomize(layer)
    mask = torch.tensor([1.0, 0.0, 0.5, 1.0])
    layer.set_rank_mask("lora", mask)
    expected = base(x) + (8 / 4) * ((x @ layer.lora_A.T) * mask) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-6)


def test_hydra_starts_equal_to_base_and_follows_the_formula(make_base, randomize):
    base = make_base("linear", 64, 32)
    layer = HydraLayer(base, r_parallel=4, r_sequential=3, alpha_parallel=8, alpha_sequential=6)
    x = _x(64)
    assert torch.equal(layer(x), base(x))  # up-projections = 0
    randomize(layer)
    m_p, m_s = torch.tensor([1.0, 0.0, 0.5, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    layer.set_rank_mask("parallel", m_p)
    layer.set_rank_mask("sequential", m_s)
    h = x @ base.weight.T + base.bias
    expected = (
        h
        + 2.0 * ((x @ layer.parallel_down.T) * m_p) @ layer.parallel_up.T
        + 2.0 * ((h @ layer.sequential_down.T) * m_s) @ layer.sequential_up.T
    )
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "int8", "int4"])
def test_zero_masks_give_the_base_output_exactly(make_base, randomize, kind):
    base = make_base(kind, 64, 32)
    x = _x(64)
    lora = LoraLayer(base, r=4, alpha=8)
    hydra = HydraLayer(base, 4, 2, 8, 8)
    for layer in (lora, hydra):
        randomize(layer)
        for slot in layer.rank_slots():
            layer.set_rank(slot, 0)
        assert torch.equal(layer(x), base(x))


def test_rank_slots_set_rank_and_active_params(make_base):
    lora = LoraLayer(make_base("linear", 64, 32), r=8, alpha=16)
    (slot,) = lora.rank_slots().values()
    assert (slot.name, slot.r_max, slot.params_per_rank) == ("lora", 8, 64 + 32)
    assert slot.rank_mask is lora.lora_rank_mask and slot.mask_buffer == "lora_rank_mask"
    assert lora.active_params() == 8 * 96
    lora.set_rank("lora", 3)
    assert lora.lora_rank_mask.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert lora.active_params() == 3 * 96
    with pytest.raises(ConfigError, match="0..8"):
        lora.set_rank("lora", 9)
    with pytest.raises(ConfigError, match=r"expected \(8,\)"):
        lora.set_rank_mask("lora", torch.ones(4))
    with pytest.raises(ConfigError, match="no rank slot 'parallel'"):
        lora.set_rank("parallel", 1)

    hydra = HydraLayer(make_base("linear", 64, 32), 4, 2, 8, 8)
    slots = hydra.rank_slots()
    assert {n: (s.r_max, s.params_per_rank) for n, s in slots.items()} == {
        "parallel": (4, 64 + 32),
        "sequential": (2, 32 + 32),
    }
    hydra.set_rank_mask("parallel", torch.tensor([1.0, 0.25, 0.0, 0.0]))  # soft: nonzero counts
    assert hydra.active_params() == 2 * 96 + 2 * 64
    assert {n for n, _ in hydra.named_buffers()} >= {"parallel_rank_mask", "sequential_rank_mask"}
    assert "parallel_rank_mask" in hydra.state_dict()  # persistent


def test_adapter_params_are_exactly_the_adapter_tensors(llama):
    apply_adapters(llama, HydraConfig(r_parallel=2, r_sequential=2, target_modules=["q_proj", "down_proj"]))
    params = adapter_parameters(llama)
    assert len(params) == 2 * 2 * 4
    assert "model.layers.0.self_attn.q_proj.parallel_down" in params
    trainable = {name for name, p in llama.named_parameters() if p.requires_grad}
    assert trainable == set(params)
    # the protocol, not the names: every parameter of every layer is either base or adapter
    for layer in adapter_layers(llama).values():
        own = {id(p) for p in layer.adapter_params().values()}
        base = {id(p) for p in layer.base_layer.parameters()}
        assert own | base == {id(p) for p in layer.parameters()} and not own & base


def test_mark_only_adapters_trainable_after_unfreezing(llama):
    apply_adapters(llama, LoraConfig(r=2, target_modules=["v_proj"]))
    llama.requires_grad_(True)
    n = mark_only_adapters_trainable(llama)
    assert n == 2 * (2 * 64 + 2 * 32)
    assert {k for k, p in llama.named_parameters() if p.requires_grad} == set(adapter_parameters(llama))


def test_quantize_model_leaves_adapter_tensors_alone(llama):
    apply_adapters(llama, LoraConfig(r=2, target_modules=["q_proj"]))
    before = {k: v.clone() for k, v in adapter_parameters(llama).items()}
    quantize_model(llama, "int8")
    layer = llama.model.layers[0].self_attn.q_proj
    assert isinstance(layer, LoraLayer) and isinstance(layer.base_layer, QuantLinear)
    after = adapter_parameters(llama)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_gradients_reach_only_adapters(make_base):
    model = nn.Sequential(make_base("int8", 16, 16), nn.ReLU(), make_base("linear", 16, 8))
    apply_adapters(model, HydraConfig(r_parallel=2, r_sequential=2, target_modules=["0", "2"]))
    for layer in adapter_layers(model).values():
        with torch.no_grad():
            layer.parallel_up.normal_()
    model(_x(16)).sum().backward()
    grads = {k for k, p in model.named_parameters() if p.grad is not None}
    assert grads and grads <= set(adapter_parameters(model))


def test_hydra_with_one_zero_rank_branch(make_base, randomize):
    base = make_base("linear", 16, 8)
    layer = HydraLayer(base, r_parallel=0, r_sequential=3, alpha_parallel=1, alpha_sequential=3)
    randomize(layer)
    x = _x(16)
    h = base(x)
    expected = h + ((h @ layer.sequential_down.T) @ layer.sequential_up.T)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "hydra"])
def test_forward_exports_and_keeps_the_mask_a_buffer(method, make_base, randomize):
    base = make_base("int8", 32, 16)
    layer = LoraLayer(base, r=4, alpha=8) if method == "lora" else HydraLayer(base, 4, 2, 8, 4)
    randomize(layer)
    x = _x(32)
    exported = torch.export.export(layer, (x,), strict=False)
    torch.testing.assert_close(exported.module()(x), layer(x))
    masks = {s.mask_buffer for s in layer.rank_slots().values()}
    assert masks <= set(exported.graph_signature.inputs_to_buffers.values())
