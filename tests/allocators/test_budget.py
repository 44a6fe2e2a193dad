"""Every allocator holds the budget (±1%) at every training step, on LoRA and Hydra adapters."""

from __future__ import annotations

import pytest

from mobile_peft.allocators import (
    BUDGET_TOLERANCE,
    active_params,
    budget_from_rank,
    get_allocator,
    resolve_budget,
    train_with_allocator,
)
from mobile_peft.allocators.base import fill_budget, unit_costs
from mobile_peft.core.errors import ConfigError, RegistryError
from mobile_peft.train import TrainConfig


@pytest.mark.parametrize("adapter", ["lora", "hydra"])
@pytest.mark.parametrize("name", ["uniform", "hydra-rank", "ard"])
def test_budget_held_at_every_step(adapted, small_data, fast_options, name, adapter):
    model = adapted(adapter)
    budget = budget_from_rank(model, 2)
    run = train_with_allocator(model, *small_data, TrainConfig(steps=4, batch_size=8), get_allocator(name, **fast_options[name]), budget)
    assert len(run.budget_trace) == 4
    for used in [*run.budget_trace, active_params(model)]:
        assert abs(used - budget) <= BUDGET_TOLERANCE * budget
    for phase in run.schedule.phases:
        assert abs(run.schedule.phase_params(phase) - budget) <= BUDGET_TOLERANCE * budget
    if name == "hydra-rank":
        assert run.reallocations >= 1, "min_gain=0 and K=2 must re-allocate"


def test_budget_helpers(adapted):
    model = adapted("lora", 8)
    per_rank = sum(ppr for _, ppr in unit_costs(model).values())
    assert budget_from_rank(model, 3) == 3 * per_rank
    assert resolve_budget(model, budget_rank=3) == 3 * per_rank
    assert resolve_budget(model, budget_params=5000) == 5000
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_budget(model, budget_params=10, budget_rank=2)
    with pytest.raises(ConfigError, match="outside"):
        resolve_budget(model, budget_params=10**9)
    with pytest.raises(ConfigError, match="exceeds r_max"):
        budget_from_rank(model, 9)
    with pytest.raises(RegistryError, match="hydra-rank"):
        get_allocator("hydra")  # the adapter's name is not an allocator


def test_uniform_between_ranks_tops_up_within_one_percent(adapted, small_data):
    model = adapted("lora", 8)
    budget = budget_from_rank(model, 2) + 3000
    schedule = get_allocator("uniform").plan(model, *small_data, budget)
    used = schedule.phase_params(schedule.phases[0])
    assert abs(used - budget) <= BUDGET_TOLERANCE * budget
    assert {r for slots in schedule.phases[0].ranks.values() for r in slots.values()} <= {2, 3}


def test_fill_budget_prefers_gain_per_parameter():
    costs = {"a": (4, 10), "b": (4, 20)}
    ranks = fill_budget({"a": lambda r: 1.0, "b": lambda r: 3.0}, costs, budget=60)
    assert ranks == {"a": 0, "b": 3}  # b: 0.15 per parameter beats a: 0.1
