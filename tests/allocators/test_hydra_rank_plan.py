"""``hydra-rank`` with the spectral performance model."""

from __future__ import annotations

import dataclasses

import pytest

from mobile_peft.allocators import BUDGET_TOLERANCE, budget_from_rank, get_allocator, train_with_allocator
from mobile_peft.core.errors import ConfigError
from mobile_peft.core.perf_model import SPECTRAL_KIND, propose_allocation
from mobile_peft.core.schedule import ranks_to_units
from mobile_peft.train import TrainConfig


@pytest.mark.parametrize("adapter", ["lora", "hydra"])
def test_spectral_hydra_rank_plans_replayably_and_reallocates(adapted, small_data, fast_options, adapter):
    """``hydra-rank`` with ``model="spectral"``: the schedule carries the spectral model and the
    spectra it planned from (a device replays the plan from them), re-allocation measures spectra
    again during training, the budget holds at every step, and a session without training data
    says why it cannot re-allocate."""
    model = adapted(adapter)
    budget = budget_from_rank(model, 2)
    allocator = get_allocator("hydra-rank", **fast_options["hydra-rank"], model="spectral", spectrum_batches=1)
    run = train_with_allocator(model, *small_data, TrainConfig(steps=4, batch_size=8), allocator, budget)
    perf = run.schedule.performance_model
    assert perf["kind"] == SPECTRAL_KIND
    units = run.schedule.units()
    assert set(perf["plan_spectra"]) == set(units)
    assert all(len(perf["plan_spectra"][u]) <= units[u]["r_max"] for u in units)
    replayed = propose_allocation(perf["plan_spectra"], perf, units, budget, min_rank=perf["min_rank"])
    assert replayed == ranks_to_units(run.schedule.phases[0].ranks, units)
    assert run.reallocations >= 1, "min_gain=0 and K=2 must re-allocate"
    for used in run.budget_trace:
        assert abs(used - budget) <= BUDGET_TOLERANCE * budget
    with pytest.raises(ConfigError, match="spectral"):
        allocator.session(adapted(adapter), dataclasses.replace(run.schedule, phases=run.schedule.phases[:1]), 4)

