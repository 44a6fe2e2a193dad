"""Dynamic re-allocation (hydra-rank) never loses what the active columns learnt."""

from __future__ import annotations

import copy

import numpy as np
import torch

from mobile_peft.adapters import adapter_layers
from mobile_peft.allocators import Phase, RankSchedule, budget_from_rank, get_allocator
from mobile_peft.allocators.hydra_rank import HydraRankReallocator, grow_columns
from mobile_peft.core.perf_model import FEATURES


def test_grow_keeps_active_columns_and_output(adapted, tiny_batch):
    model = adapted("lora", 8)
    layer = next(iter(adapter_layers(model).values()))
    layer.set_rank("lora", 2)
    with torch.no_grad():
        layer.lora_B.normal_()  # pretend training happened
    x = torch.randn(3, layer.in_features)
    before_out = layer(x)
    a, b = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    grow_columns(layer, "lora", 2, 5, np.random.default_rng(0))
    layer.set_rank("lora", 5)
    assert torch.equal(layer.lora_A[:2], a[:2]) and torch.equal(layer.lora_B[:, :2], b[:, :2])
    assert torch.count_nonzero(layer.lora_B[:, 2:5]) == 0, "new up columns start at zero"
    torch.testing.assert_close(layer(x), before_out)


def test_reallocator_keeps_values_of_still_active_columns(adapted):
    model = adapted("hydra", 8)
    budget = budget_from_rank(model, 2)
    uniform = get_allocator("uniform").plan(model, None, None, budget)
    # A performance model that prefers the language MLP: the re-allocation must move rank there.
    weights = [0.0, 0.0, 0.0, 0.0, -5.0, 0.0]
    assert len(weights) == len(FEATURES)
    uniform.performance_model = {"feature_names": list(FEATURES), "weights": weights, "intercept": 3.0, "min_rank": 1}
    schedule = RankSchedule.from_dict(uniform.to_dict())
    schedule.apply(model)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for p in layer.adapter_params().values():
                p.normal_()
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    callback = HydraRankReallocator(schedule, every=1, total_steps=10, min_gain=0.0)
    for layer in adapter_layers(model).values():  # fake gradients so the collector has signals
        for p in layer.adapter_params().values():
            p.grad = torch.ones_like(p)
    callback.on_step_end(1, 1.0, model)
    assert len(schedule.phases) == 2 and schedule.phases[1].start_step == 1
    old, new = schedule.phases[0].ranks, schedule.phases[1].ranks
    assert old != new
    for path, layer in adapter_layers(model).items():
        for slot, info in layer.rank_slots().items():
            keep = min(old[path][slot], new[path][slot])
            down, up = getattr(layer, info.down), getattr(layer, info.up)
            assert torch.equal(down[:keep], snapshot[f"{path}.{info.down}"][:keep])
            assert torch.equal(up[:, :keep], snapshot[f"{path}.{info.up}"][:, :keep])
            grown = range(old[path][slot], new[path][slot])
            assert all(torch.count_nonzero(up[:, j]) == 0 for j in grown)
            assert int(torch.count_nonzero(info.rank_mask)) == new[path][slot]
    lm = [r for m, s in new.items() if "mlp" in m and m.startswith("language") for r in s.values()]
    assert sum(lm) / len(lm) > 2, "rank moved towards the favoured group"
    assert abs(schedule.phase_params(schedule.phases[1]) - budget) <= 0.01 * budget


def test_phase_replay_applies_recorded_phases(adapted, small_data):
    from mobile_peft.allocators import train_with_allocator
    from mobile_peft.train import TrainConfig

    model = adapted("lora", 8)
    budget = budget_from_rank(model, 2)
    first = get_allocator("uniform").plan(model, None, None, budget)
    second = copy.deepcopy(first.phases[0].ranks)
    modules = list(second)
    second[modules[0]]["lora"], second[modules[1]]["lora"] = 3, 1  # same cost only if same ppr
    if first.modules[modules[0]]["lora"]["params_per_rank"] != first.modules[modules[1]]["lora"]["params_per_rank"]:
        second[modules[1]]["lora"] = 2
        second[modules[0]]["lora"] = 2
    first.phases.append(Phase(2, second))
    run = train_with_allocator(model, *small_data, TrainConfig(steps=3, batch_size=8), get_allocator("uniform"), budget, schedule=first.validate())
    layers = adapter_layers(model)
    assert int(layers[modules[0]].lora_rank_mask.sum()) == second[modules[0]]["lora"]
    assert run.reallocations == 1
