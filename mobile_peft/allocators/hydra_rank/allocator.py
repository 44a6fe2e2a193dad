"""``hydra-rank``: HyDRA (Xi, Bing, Yahyapour, arXiv 2512.20674) -- hierarchical and dynamic
rank allocation driven by a lightweight performance model.

* **hierarchical**: every rank slot of every module is an allocation unit, so ranks differ
  across layers (coarse: vision layers, projector, language layers) and across module types
  inside a layer (fine: q/k/v/o, gate/up/down, vision attention/MLP); the performance model's
  features are per tower x block plus depth (see :mod:`.perf_model`).
* **plan**: a short warm-up at uniform rank collects per-slot gradient signals; ``probes`` short
  probe runs (budget-feasible configurations that stress different groups) from the warm-up state
  are scored on held-out *training* examples; the model is fitted on them and searched greedily.
* **dynamic**: during fine-tuning a callback refreshes the gradient signals every step (EMA) and
  every ``K`` steps re-proposes an allocation with the same fitted model, within the same budget.
  Growing a slot re-initialises its new columns as LoRA does (down: kaiming-uniform, up: zero,
  so the function is unchanged); active columns are never touched; shrinking masks the last
  columns. Each re-allocation appends a phase to the schedule and is logged.

The fitted model (a few dozen numbers) is stored in ``RankSchedule.performance_model``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ...adapters.base import adapter_layers
from ...train.trainer import TrainConfig, train
from .._modules import split_unit, unit_key
from ..base import Allocator, DynamicSession, adapter_kind, ranks_by_module, schedule_from_ranks
from ..registry import ALLOCATORS
from ..schedule import Phase, RankSchedule
from .config import HydraRankConfig
from .perf_model import GROUPS, fit_performance_model, predict_loss, propose_allocation
from .signals import SignalCollector

__all__ = ["HydraRankAllocator", "HydraRankReallocator", "grow_columns"]

logger = logging.getLogger(__name__)


def _units(schedule_modules: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    return {
        unit_key(m, s): dict(info)
        for m, slots in schedule_modules.items()
        for s, info in slots.items()
        if info["r_max"] > 0
    }


@torch.no_grad()
def _eval_loss(model: nn.Module, dataset: Any) -> float:
    from ...train import evaluate

    return evaluate(model, dataset, batch_size=len(dataset)).loss


@torch.no_grad()
def grow_columns(
    layer: nn.Module, slot: str, old: int, new: int, generator: torch.Generator | None = None
) -> None:
    """Re-initialise rank columns ``old..new-1`` of ``slot`` as fresh LoRA columns: the down rows
    kaiming-uniform (as ``nn.Linear``), the up columns zero -- the layer's output is unchanged and
    the active columns ``0..old-1`` keep their values."""
    if new <= old:
        return
    info = layer.rank_slots()[slot]
    down, up = getattr(layer, info.down), getattr(layer, info.up)
    bound = 1.0 / math.sqrt(down.shape[1])  # kaiming_uniform(a=sqrt(5)) on [r, fan_in]
    fresh = torch.rand(new - old, down.shape[1], generator=generator, dtype=torch.float32) * 2 * bound - bound
    down[old:new] = fresh.to(down.dtype)
    up[:, old:new] = 0.0


@ALLOCATORS.register("hydra-rank")
class HydraRankAllocator(Allocator):
    name = "hydra-rank"

    def __init__(self, **options: Any) -> None:
        self.config = HydraRankConfig(**options)

    # -- plan -----------------------------------------------------------------------------------
    def plan(self, model: nn.Module, train_ds: Any, eval_ds: Any, budget: int) -> RankSchedule:
        cfg = self.config
        work = copy.deepcopy(model)
        modules = schedule_from_ranks(work, self.name, adapter_kind(work), budget, {}).modules
        units = _units(modules)
        n_val = min(cfg.probe_val, max(1, len(train_ds) // 4))
        probe_train = Subset(train_ds, range(len(train_ds) - n_val))
        probe_val = Subset(train_ds, range(len(train_ds) - n_val, len(train_ds)))
        # 1) warm-up at uniform rank: gradient signals
        from ..uniform import UniformAllocator

        uniform = UniformAllocator().plan(work, train_ds, eval_ds, budget)
        uniform.apply(work, 0)
        collector = SignalCollector()
        warm = TrainConfig(steps=cfg.warmup_steps, batch_size=cfg.probe_batch_size, lr=cfg.lr, seed=cfg.seed)
        train(work, probe_train, warm, callbacks=[collector])
        signals = collector.signals()
        state = {k: v.detach().clone() for k, v in work.state_dict().items()}
        # 2) probe runs: budget-feasible configurations that stress different groups
        configs = self._probe_configs(signals, units, budget, uniform)
        losses = []
        for j, ranks in enumerate(configs):
            work.load_state_dict(state)
            self._apply_units(work, ranks, previous=None)
            probe = TrainConfig(
                steps=cfg.probe_steps, batch_size=cfg.probe_batch_size, lr=cfg.lr, seed=cfg.seed + 1
            )
            train(work, probe_train, probe)
            losses.append(_eval_loss(work, probe_val))
            logger.info("hydra-rank probe %d/%d: val loss %.4f", j + 1, len(configs), losses[-1])
        # 3) fit the performance model and search
        perf = fit_performance_model(configs, losses, signals, units, ridge=cfg.ridge)
        perf["probe_losses"] = [round(v, 5) for v in losses]
        perf["min_rank"] = cfg.min_rank
        perf["plan_signals"] = {u: round(v, 6) for u, v in sorted(signals.items())}
        # Search with the serialised (rounded) model and signals: a device replays it exactly.
        best = propose_allocation(perf["plan_signals"], perf, units, budget, min_rank=cfg.min_rank)
        logger.info(
            "hydra-rank model: spearman in-sample %.3f, loo %.3f",
            perf["fit"]["spearman_in_sample"],
            perf["fit"]["spearman_loo"],
        )
        schedule = schedule_from_ranks(model, self.name, adapter_kind(model), budget, ranks_by_module(best))
        schedule.performance_model = perf
        return schedule.validate()

    def _probe_configs(self, signals, units, budget, uniform: RankSchedule) -> list[dict[str, int]]:
        rng = np.random.default_rng(self.config.seed)
        base = uniform.phases[0].ranks
        configs = [{u: base[split_unit(u)[0]][split_unit(u)[1]] for u in units}]
        prior = {
            "weights": [-1.0] * len(GROUPS) + [0.0],
            "intercept": 0.0,
            "feature_names": [*GROUPS, "depth"],
        }
        configs.append(propose_allocation(signals, prior, units, budget, min_rank=self.config.min_rank))
        while len(configs) < self.config.probes:
            weights = [-float(np.exp(rng.normal(0.0, 1.0))) for _ in GROUPS] + [float(rng.normal(0.0, 1.0))]
            model = {**prior, "weights": weights}
            configs.append(propose_allocation(signals, model, units, budget, min_rank=self.config.min_rank))
        return configs

    @staticmethod
    def _apply_units(model: nn.Module, ranks: dict[str, int], previous: dict[str, int] | None) -> None:
        layers = adapter_layers(model)
        for key, r in ranks.items():
            module, slot = split_unit(key)
            if previous is not None:
                grow_columns(layers[module], slot, previous[key], r)
            layers[module].set_rank(slot, int(r))

    # -- dynamic phases -------------------------------------------------------------------------
    def session(self, model: nn.Module, schedule: RankSchedule, total_steps: int) -> DynamicSession:
        session = super().session(model, schedule, total_steps)
        every = self.config.reallocate_every
        if every is None:
            every = max(1, total_steps // 3)
        if schedule.performance_model is None or every == 0 or len(schedule.phases) > 1:
            return session  # nothing to re-allocate with (or replaying a recorded schedule)
        session.callbacks.append(HydraRankReallocator(schedule, every, total_steps, self.config.min_gain))
        return session


class HydraRankReallocator:
    """Trainer callback: EMA gradient signals every step; every ``every`` steps (not at the last
    step) a new allocation from the performance model, applied if it is predicted to help."""

    def __init__(self, schedule: RankSchedule, every: int, total_steps: int, min_gain: float) -> None:
        self.schedule = schedule
        self.every = every
        self.total_steps = total_steps
        self.min_gain = min_gain
        self.collector = SignalCollector()
        self.units = _units(schedule.modules)
        self.model = schedule.performance_model or {}
        self.min_rank = int(self.model.get("min_rank", 1))
        self.generator = torch.Generator().manual_seed(0)
        self.events: list[dict[str, Any]] = []

    def current(self) -> dict[str, int]:
        ranks = self.schedule.phases[-1].ranks
        return {u: ranks[split_unit(u)[0]][split_unit(u)[1]] for u in self.units}

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        self.collector.on_step_end(step, loss, model)
        if step % self.every or step + self.every > self.total_steps:  # no re-allocation right before the end
            return
        signals = self.collector.signals()
        old = self.current()
        new = propose_allocation(signals, self.model, self.units, self.schedule.budget_params, self.min_rank)
        before = predict_loss(self.model, old, signals, self.units)
        after = predict_loss(self.model, new, signals, self.units)
        if new == old or before - after <= self.min_gain * abs(before):
            logger.info("hydra-rank step %d: allocation kept (predicted %.4f -> %.4f)", step, before, after)
            return
        HydraRankAllocator._apply_units(model, new, previous=old)
        self.schedule.phases.append(Phase(step, ranks_by_module(new)))
        moved = sum(abs(new[u] - old[u]) for u in new)
        grown = sum(max(0, new[u] - old[u]) for u in new)
        event = {
            "step": step,
            "ranks_moved": moved,
            "ranks_grown": grown,
            "predicted_loss": [round(before, 4), round(after, 4)],
        }
        self.events.append(event)
        logger.info(
            "hydra-rank step %d: re-allocated %d rank units (%d grown), predicted loss %.4f -> %.4f",
            step,
            moved,
            grown,
            before,
            after,
        )
