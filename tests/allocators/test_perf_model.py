"""HyDRA's performance model: torch-free, small, serialisable; predictions correlate with losses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mobile_peft.allocators import budget_from_rank, get_allocator
from mobile_peft.allocators.base import unit_costs
from mobile_peft.core import perf_model as pm


def _units(model):
    return {u: {"r_max": r, "params_per_rank": p} for u, (r, p) in unit_costs(model).items()}


TRUE_MODEL = {
    "feature_names": list(pm.FEATURES),
    "weights": [-0.5, -2.0, -0.2, -1.0, -3.0, 0.5],
    "intercept": 2.0,
}


def _synthetic_probes(units, seed: int, n: int):
    """``n`` budget-feasible probe configurations proposed by random models around
    :data:`TRUE_MODEL`; returns (rng, signals, budget, configs)."""
    rng = np.random.default_rng(seed)
    signals = {u: float(rng.uniform(0.2, 2.0)) for u in units}
    budget = sum(2 * u["params_per_rank"] for u in units.values())
    configs = []
    for _ in range(n):
        w = [-float(np.exp(rng.normal())) for _ in pm.GROUPS] + [float(rng.normal())]
        configs.append(pm.propose_allocation(signals, {**TRUE_MODEL, "weights": w}, units, budget))
    return rng, signals, budget, configs


def test_recovers_a_known_model_and_ranks_probe_losses(adapted):
    """Synthetic probes from a known utility: fitted predictions order them (Spearman >= 0.9)."""
    units = _units(adapted("lora", 8))
    rng, signals, budget, configs = _synthetic_probes(units, seed=0, n=10)
    true = TRUE_MODEL
    losses = [pm.predict_loss(true, c, signals, units) + rng.normal(0, 1e-3) for c in configs]
    model = pm.fit_performance_model(configs, losses, signals, units, ridge=0.01)
    assert model["fit"]["spearman_in_sample"] >= 0.9
    assert model["fit"]["spearman_loo"] >= 0.7
    # small and serialisable: a few dozen numbers, JSON round trip
    numbers = len(model["weights"]) + 2
    assert numbers < 100
    assert json.loads(json.dumps(model)) == model
    best = pm.propose_allocation(signals, model, units, budget)
    used = sum(best[u] * units[u]["params_per_rank"] for u in units)
    assert abs(used - budget) <= 0.01 * budget
    assert pm.predict_loss(true, best, signals, units) <= min(losses) + 1e-2


def test_spearman():
    assert pm.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert pm.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pm.spearman([1, 2], [1, 2]))


def test_plan_on_real_probes_reports_a_rank_correlation(adapted, small_data):
    model = adapted("lora", 8)
    budget = budget_from_rank(model, 2)
    allocator = get_allocator(
        "hydra-rank", warmup_steps=2, probes=4, probe_steps=2, probe_val=16, probe_batch_size=8
    )
    schedule = allocator.plan(model, *small_data, budget)
    perf = schedule.performance_model
    assert perf is not None and len(perf["probe_losses"]) == 4
    assert -1.0 <= perf["fit"]["spearman_in_sample"] <= 1.0
    # The plan's allocation is what the shipped model proposes from the shipped signals.
    units = _units(model)
    again = pm.propose_allocation(perf["plan_signals"], perf, units, budget, perf["min_rank"])
    ranks = {f"{m}::{s}": r for m, slots in schedule.phases[0].ranks.items() for s, r in slots.items()}
    assert again == ranks
    assert len(json.dumps(perf)) < 20_000


PRIOR = {"weights": [-1.0] * len(pm.GROUPS) + [0.0], "intercept": 0.0, "feature_names": [*pm.GROUPS, "depth"]}


def _two_slot_units(seq_cost: int = 10) -> dict[str, dict[str, int]]:
    return {
        f"m{i}::{s}": {"r_max": 8, "params_per_rank": 10 if s == "parallel" else seq_cost}
        for i in range(4)
        for s in ("parallel", "sequential")
    }


def test_a_min_rank_floor_that_would_eat_the_budget_is_dropped():
    """Two slots per module at a budget that rank 1 everywhere exhausts (Hydra adapters at a
    LoRA-rank-2 budget): the search must be free to drop slots and move ranks, not return the floor."""
    units = _two_slot_units()
    signals = {u: (100.0 if u == "m0::parallel" else 1.0) for u in units}
    budget = 80  # rank 1 on all 8 slots would use all of it
    ranks = pm.propose_allocation(signals, PRIOR, units, budget, min_rank=1)
    assert sum(r * 10 for r in ranks.values()) <= budget * 1.01
    assert ranks["m0::parallel"] > 1 and min(ranks.values()) == 0
    assert pm.rank_floor(units, budget, 1) == {}
    assert pm.rank_floor(units, 2 * budget, 1) == dict.fromkeys(units, 1)


def test_a_per_module_floor_keeps_the_cheaper_slot():
    """``per_module`` (ARD's floor): where every slot would be too dear, one slot per module keeps
    ``min_rank`` -- the cheaper one, on a tie the first in sorted order -- and a floor too dear even
    then is dropped."""
    parallel = {f"m{i}::parallel": 1 for i in range(4)}
    sequential = {f"m{i}::sequential": 1 for i in range(4)}
    assert pm.rank_floor(_two_slot_units(), 80, 1, per_module=True) == parallel  # tie: sorted order
    assert pm.rank_floor(_two_slot_units(seq_cost=5), 80, 1, per_module=True) == sequential  # the cheaper slot
    units = _two_slot_units(seq_cost=15)
    assert pm.rank_floor(units, 100, 1, per_module=True) == parallel  # the cheaper slot
    assert pm.rank_floor(units, 60, 1, per_module=True) == {}  # 40 > half of 60


def test_ridge_chosen_by_leave_one_out(adapted):
    """Probes that carry a real per-group signal keep the corrections (a finite ridge); probes
    that are noise around a constant fall back to the prior (infinite ridge: shared slope)."""
    units = _units(adapted("lora", 8))
    rng, signals, _, configs = _synthetic_probes(units, seed=1, n=8)
    informative = pm.fit_performance_model(
        configs, [pm.predict_loss(TRUE_MODEL, c, signals, units) for c in configs], signals, units
    )
    assert informative["ridge"] is not None and len(informative["ridge_selection"]["loo_mse"]) == len(
        pm.RIDGE_GRID
    )
    noise = pm.fit_performance_model(configs, list(1.0 + rng.normal(0, 1e-2, len(configs))), signals, units)
    assert noise["ridge"] is None  # prior only: one slope for every group, no depth term
    assert len(set(noise["weights"][: len(pm.GROUPS)])) == 1 and noise["weights"][-1] == 0.0
    assert min(noise["ridge_selection"]["loo_mse"]) == noise["ridge_selection"]["loo_mse"][-1]
    json.loads(json.dumps(noise))  # no infinity in the serialised model


# -- the spectral model --------------------------------------------------------------------------------

SPECTRAL_TRUE = {
    "kind": pm.SPECTRAL_KIND,
    "version": 2,
    "feature_names": list(pm.GROUPS),
    "weights": [-0.5, -2.0, -0.2, -1.0, -3.0],
    "intercept": 2.0,
}


def test_spectral_model_recovers_a_known_model_and_its_search_is_budgeted(adapted):
    units = _units(adapted("lora", 8))
    rng, _, budget, configs = _synthetic_probes(units, seed=2, n=10)
    spectra = {u: sorted(rng.uniform(0, 1, 8) ** 3, reverse=True) for u in units}
    losses = [pm.predict_loss(SPECTRAL_TRUE, c, spectra, units) + rng.normal(0, 1e-4) for c in configs]
    model = pm.fit_spectral_model(configs, losses, spectra, units, ridge=0.01)
    assert model["kind"] == pm.SPECTRAL_KIND and json.loads(json.dumps(model)) == model
    assert model["fit"]["spearman_in_sample"] >= 0.9 and model["fit"]["spearman_loo"] >= 0.7
    best = pm.propose_allocation(spectra, model, units, budget)
    assert abs(sum(best[u] * units[u]["params_per_rank"] for u in units) - budget) <= 0.01 * budget
    assert pm.predict_loss(SPECTRAL_TRUE, best, spectra, units) <= min(losses) + 1e-3


def test_spectral_features_are_captured_energy_shares_and_gains_are_concave():
    units = {
        "language_model.model.layers.0.mlp.up_proj::lora": {"r_max": 3, "params_per_rank": 4},
        "language_model.model.layers.0.self_attn.q_proj::lora": {"r_max": 3, "params_per_rank": 4},
    }
    spectra = {
        "language_model.model.layers.0.mlp.up_proj::lora": [1.0, 4.0, 0.0],  # sorted inside
        "language_model.model.layers.0.self_attn.q_proj::lora": [3.0, 2.0],
    }  # padded to r_max
    phi = pm.spectral_features(dict.fromkeys(units, 1), spectra, units)
    assert phi.tolist() == pytest.approx([0, 0, 0, 0.3, 0.4])
    model = {**SPECTRAL_TRUE, "weights": [-1.0] * 5}
    gains = pm.marginal_gains(model, spectra, units)
    g = [gains["language_model.model.layers.0.mlp.up_proj::lora"](r) for r in range(4)]
    assert g == pytest.approx([0.4, 0.1, 0.0, 0.0])


def test_an_unknown_model_kind_or_version_is_refused():
    units = {"language_model.model.layers.0.mlp.up_proj::lora": {"r_max": 2, "params_per_rank": 4}}
    for bad in ({**SPECTRAL_TRUE, "version": 3}, {**SPECTRAL_TRUE, "kind": "hydra-rank/other"}):
        with pytest.raises(ValueError, match="not one this SDK reads"):
            pm.predict_loss(bad, {}, {}, units)
        with pytest.raises(ValueError, match="not one this SDK reads"):
            pm.propose_allocation({}, bad, units, 8)
