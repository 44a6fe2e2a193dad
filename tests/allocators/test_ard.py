"""ARD-LoRA: regulariser and soft-mask gradients against finite differences; freezing rule."""

from __future__ import annotations

import torch

from mobile_peft.adapters import adapter_layers
from mobile_peft.allocators import budget_from_rank, get_allocator
from mobile_peft.allocators.ard import ARDConfig, ARDMasks, soft_mask, tv_pairs
from mobile_peft.allocators.base import unit_costs
from mobile_peft.core.units import split_unit


def _masks(model, lambda1=0.3, lambda2=0.7):
    budget = budget_from_rank(model, 2)
    init = dict.fromkeys(unit_costs(model), 2)
    return ARDMasks(model, ARDConfig(lambda1=lambda1, lambda2=lambda2), init, budget)


def test_regulariser_gradient_matches_finite_differences(adapted):
    masks = _masks(adapted("lora", 8))
    n = len(masks.units)
    alpha = (
        torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    ).requires_grad_()
    assert torch.autograd.gradcheck(masks.regulariser, (alpha,), eps=1e-6, atol=1e-6)
    # and against the closed form: lambda1 * sign(a) + lambda2 * sum of signs of adjacent differences
    (grad,) = torch.autograd.grad(masks.regulariser(alpha), alpha)
    expected = torch.full((n,), 0.3, dtype=torch.float64)
    for a, b in masks.pairs:
        s = torch.sign(alpha[a] - alpha[b]).item()
        expected[a] += 0.7 * s
        expected[b] -= 0.7 * s
    torch.testing.assert_close(grad, expected)
    masks.remove()


def test_tv_pairs_join_adjacent_layers_of_the_same_module_type():
    units = [f"language_model.model.layers.{i}.self_attn.q_proj::lora" for i in (0, 1, 3)]
    units += ["language_model.model.layers.0.mlp.up_proj::lora", "projector.linear_1::lora"]
    assert tv_pairs(units) == [(0, 1)]  # layer 1 -> 3 is not adjacent; other types have no neighbour


def test_soft_mask_forward_and_straight_through_gradient():
    alpha = torch.tensor(0.437, dtype=torch.float64, requires_grad=True)
    mask = soft_mask(alpha, 8)
    expected = (8 * 0.437 - torch.arange(8, dtype=torch.float64)).clamp(0, 1)
    torch.testing.assert_close(mask.detach(), expected)  # 8 * 0.437 = 3.496: three ones, 0.496, zeros
    weights = torch.arange(1.0, 9.0, dtype=torch.float64)
    (grad,) = torch.autograd.grad((mask * weights).sum(), alpha)
    assert grad.item() == 8 * (weights[3] + weights[4])  # r0 on the last active and first inactive column
    # on an integer (where a plain clamp has no gradient at all) the boundary still carries one
    at_edge = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((soft_mask(at_edge, 8) * weights).sum(), at_edge)
    assert grad.item() == 8 * (weights[1] + weights[2])


def test_soft_mask_floor_columns_stay_on_and_carry_no_gradient():
    weights = torch.arange(1.0, 9.0, dtype=torch.float64)
    small = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)  # 8 * 0.05 = 0.4
    mask = soft_mask(small, 8, floor=1)
    assert mask.detach().tolist() == [1.0] + [0.0] * 7  # not 0.4: the floor column is whole
    (grad,) = torch.autograd.grad((mask * weights).sum(), small)
    assert grad.item() == 8 * weights[1]  # only the first column above the floor can move
    above = torch.tensor(0.437, dtype=torch.float64, requires_grad=True)
    # above the floor the mask and its gradient are the plain ones
    torch.testing.assert_close(soft_mask(above, 8, floor=1), soft_mask(above, 8))


def test_floor_keeps_one_slot_per_hydra_module_whole(adapted):
    """Hydra adapters at a LoRA-rank-2 budget (rank 1 on both slots spends all of it): each module
    keeps its cheaper slot's first column whole; the other slot's alpha is free to go to zero."""
    model = adapted("hydra", 8)
    lora = adapted("lora", 8)
    budget = budget_from_rank(lora, 2)
    masks = ARDMasks(model, ARDConfig(), dict.fromkeys(unit_costs(model), 1), budget)
    module = {u: split_unit(u)[0] for u in masks.units}
    held = {u for u, f in zip(masks.units, masks.floor) if f}
    modules = set(module.values())
    assert {module[u] for u in held} == modules and len(held) == len(modules)
    for u, f, ppr in zip(masks.units, masks.floor, masks.cost):
        other = [c for v, c in zip(masks.units, masks.cost) if v != u and module[v] == module[u]]
        assert not f or ppr <= other[0]  # the cheaper branch holds the floor
    # alphas at zero keep the floor, and it takes at most half the budget
    floor_cost = sum(c for c, f in zip(masks.cost, masks.floor) if f)
    assert masks.hard_cost(torch.zeros(len(masks.units))) == floor_cost <= budget / 2
    masks.remove()
    free = ARDMasks(model, ARDConfig(min_rank=0), dict.fromkeys(unit_costs(model), 1), budget)
    assert free.floor == [0] * len(masks.units)
    free.remove()


def test_task_gradient_reaches_alpha_through_the_soft_masks(adapted, tiny_batch):
    model = adapted("lora", 8)
    masks = _masks(model)
    with torch.no_grad():  # a trained-looking adapter, so the masked columns matter
        for layer in adapter_layers(model).values():
            layer.lora_B.normal_(std=0.1)
    loss = model(tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["labels"]).loss + masks()
    loss.backward()
    assert masks.raw.grad is not None and torch.count_nonzero(masks.raw.grad) > len(masks.units) // 2
    masks.remove()


def test_frozen_ranks_rule_and_budget(adapted, small_data):
    model = adapted("lora", 8)
    budget = budget_from_rank(model, 2)
    schedule = get_allocator("ard", plan_steps=2, plan_batch_size=8).plan(model, *small_data, budget)
    ranks = [r for slots in schedule.phases[0].ranks.values() for r in slots.values()]
    assert min(ranks) >= 1  # every slot keeps at least its first column (alpha >= 1e-4)
    assert abs(schedule.phase_params(schedule.phases[0]) - budget) <= 0.01 * budget


def test_freezing_keeps_the_trained_function(adapted, tiny_batch, small_data):
    """The frozen adapter computes what the soft masks computed: the mask values (fractional last
    columns included) go into the up columns, the support becomes the hard ranks, the budget holds."""
    model = adapted("hydra", 8)
    budget = budget_from_rank(model, 1)
    allocator = get_allocator("ard", plan_steps=2, plan_batch_size=8)
    schedule = get_allocator("uniform").plan(model, *small_data, budget)
    session = allocator.session(model, schedule, total_steps=4)
    with torch.no_grad():  # a trained-looking adapter and alphas that have moved apart, as after training
        for layer in adapter_layers(model).values():
            for slot in layer.rank_slots().values():
                getattr(layer, slot.up).normal_(std=0.1)
        session.masks.raw.mul_(
            torch.rand(session.masks.raw.shape, generator=torch.Generator().manual_seed(0)) + 0.5
        )
    session.masks.project()
    masks = [
        s.rank_mask.clone() for layer in adapter_layers(model).values() for s in layer.rank_slots().values()
    ]
    assert any(((m > 0) & (m < 1)).any() for m in masks)  # some slots really are fractional
    model.eval()
    with torch.no_grad():
        before = model(tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["labels"]).logits
        frozen = session.finish(model)
        after = model(tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["labels"]).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for layer in adapter_layers(model).values():
        for slot in layer.rank_slots().values():
            assert set(slot.rank_mask.unique().tolist()) <= {0.0, 1.0}
    assert frozen.phase_params(frozen.phases[0]) <= budget * 1.01
