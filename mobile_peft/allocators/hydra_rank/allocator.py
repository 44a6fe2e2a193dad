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
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ...adapters.base import adapter_layers
from ...core.errors import ConfigError
from ...core.perf_model import (
    GROUPS,
    MODEL_KIND,
    SPECTRAL_KIND,
    SPECTRAL_VERSION,
    fit_performance_model,
    fit_spectral_model,
    propose_allocation,
)
from ...core.realloc import Reallocation, grow_init
from ...core.schedule import ranks_to_units, units_to_ranks
from ...core.units import split_unit
from ...train.trainer import TrainConfig, train
from ..base import Allocator, DynamicSession, adapter_kind, schedule_from_ranks
from ..registry import ALLOCATORS
from ..schedule import Phase, RankSchedule
from .config import HydraRankConfig
from .signals import SignalCollector, gradient_spectra

__all__ = ["HydraRankAllocator", "HydraRankReallocator", "grow_columns"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def _eval_loss(model: nn.Module, dataset: Any) -> float:
    from ...train import evaluate

    return evaluate(model, dataset, batch_size=len(dataset)).loss


@torch.no_grad()
def grow_columns(layer: nn.Module, slot: str, old: int, new: int, rng: np.random.Generator) -> None:
    """Re-initialise rank columns ``old..new-1`` of ``slot`` as fresh LoRA columns
    (:func:`mobile_peft.core.realloc.grow_init`: down rows kaiming-uniform, up columns zero) -- the
    layer's output is unchanged and the active columns ``0..old-1`` keep their values."""
    if new <= old:
        return
    info = layer.rank_slots()[slot]
    down, up = getattr(layer, info.down), getattr(layer, info.up)
    down[old:new] = torch.from_numpy(grow_init(rng, new - old, down.shape[1])).to(down.dtype)
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
        units = schedule_from_ranks(work, self.name, adapter_kind(work), budget, {}).units()
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
        spectral = cfg.model == "spectral"
        if spectral:  # what the spectral model reads: each slot's gradient spectrum at the warm-up state
            reads = self._spectra(work, probe_train)
        else:
            reads = signals
        state = {k: v.detach().clone() for k, v in work.state_dict().items()}
        # 2) probe runs: budget-feasible configurations that stress different groups
        configs = self._probe_configs(reads, units, budget, uniform)
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
        fit = fit_spectral_model if spectral else fit_performance_model
        perf = fit(configs, losses, reads, units, ridge=cfg.ridge)
        perf["probe_losses"] = [round(v, 5) for v in losses]
        perf["min_rank"] = cfg.min_rank
        # What the plan read, rounded as serialised; the search reads it so a device replays it exactly.
        if spectral:
            perf["plan_spectra"] = {u: [float(f"{v:.6g}") for v in e] for u, e in sorted(reads.items())}
        else:
            perf["plan_signals"] = {u: round(v, 6) for u, v in sorted(signals.items())}
        best = propose_allocation(
            perf["plan_spectra" if spectral else "plan_signals"], perf, units, budget, min_rank=cfg.min_rank
        )
        logger.info(
            "hydra-rank model: spearman in-sample %.3f, loo %.3f",
            perf["fit"]["spearman_in_sample"],
            perf["fit"]["spearman_loo"],
        )
        schedule = schedule_from_ranks(model, self.name, adapter_kind(model), budget, units_to_ranks(best))
        schedule.performance_model = perf
        return schedule.validate()

    def _spectra(self, model: nn.Module, dataset: Any) -> dict[str, list[float]]:
        cfg = self.config
        return gradient_spectra(model, dataset, cfg.spectrum_batches, cfg.probe_batch_size, cfg.seed + 7)

    def _probe_configs(self, reads, units, budget, uniform: RankSchedule) -> list[dict[str, int]]:
        """Uniform, the model's prior's proposal (every group weighs the same), then proposals of
        priors with random group weights (log-normal; the log-rank model also a random depth slope)."""
        rng = np.random.default_rng(self.config.seed)
        base = uniform.phases[0].ranks
        configs = [ranks_to_units(base, units)]
        spectral = self.config.model == "spectral"
        prior = {"intercept": 0.0, "weights": [-1.0] * len(GROUPS)}
        if spectral:
            prior.update(kind=SPECTRAL_KIND, version=SPECTRAL_VERSION, feature_names=list(GROUPS))
        else:
            prior.update(kind=MODEL_KIND, weights=[*prior["weights"], 0.0], feature_names=[*GROUPS, "depth"])
        configs.append(propose_allocation(reads, prior, units, budget, min_rank=self.config.min_rank))
        while len(configs) < self.config.probes:
            weights = [-float(np.exp(rng.normal(0.0, 1.0))) for _ in GROUPS]
            if not spectral:
                weights.append(float(rng.normal(0.0, 1.0)))
            model = {**prior, "weights": weights}
            configs.append(propose_allocation(reads, model, units, budget, min_rank=self.config.min_rank))
        return configs

    @staticmethod
    def _apply_units(model: nn.Module, ranks: dict[str, int], previous: dict[str, int] | None = None,
                     rng: np.random.Generator | None = None) -> None:
        layers = adapter_layers(model)
        for key, r in ranks.items():
            module, slot = split_unit(key)
            if previous is not None and rng is not None:
                grow_columns(layers[module], slot, previous[key], r, rng)
            layers[module].set_rank(slot, int(r))

    # -- dynamic phases -------------------------------------------------------------------------
    def session(
        self, model: nn.Module, schedule: RankSchedule, total_steps: int, train_ds: Any = None
    ) -> DynamicSession:
        session = super().session(model, schedule, total_steps, train_ds)
        every = self.config.reallocate_every
        if every is None:
            every = max(1, total_steps // 3)
        if schedule.performance_model is None or every == 0 or len(schedule.phases) > 1:
            return session  # nothing to re-allocate with (or replaying a recorded schedule)
        spectra = None
        if schedule.performance_model.get("kind") == SPECTRAL_KIND:
            if train_ds is None:
                raise ConfigError(
                    "this schedule's performance model is spectral: re-allocating during training measures gradient "
                    "spectra on the training data, and none was given. Pass the training set, or "
                    "reallocate_every=0 to train the planned ranks."
                )
            spectra = partial(self._spectra, dataset=train_ds)
        session.callbacks.append(
            HydraRankReallocator(schedule, every, total_steps, self.config.min_gain, self.config.seed, spectra)
        )
        return session


class HydraRankReallocator:
    """Trainer callback: the gradient signals every step; at each re-allocation point
    (:meth:`mobile_peft.core.realloc.Reallocation.due`) the core's decision, applied to the model
    and appended to the schedule as a phase. A phone runs the same decision on the runtime's
    gradients (``mobile_peft.runtime.realloc``). With a spectral model, ``spectra(model)`` measures
    what it reads at each point (a few extra forward/backward passes; no parameter changes)."""

    def __init__(
        self,
        schedule: RankSchedule,
        every: int,
        total_steps: int,
        min_gain: float,
        seed: int = 0,
        spectra: Callable[[nn.Module], dict[str, list[float]]] | None = None,
    ) -> None:
        self.schedule = schedule
        self.collector = SignalCollector()
        self.units = schedule.units()
        kinds = (SPECTRAL_KIND,) if spectra is not None else (MODEL_KIND,)
        self.policy = Reallocation(
            schedule.performance_model, self.units, schedule.budget_params, every, total_steps, min_gain, kinds
        )
        self.spectra = spectra
        self.seed = seed
        self.events: list[dict[str, Any]] = []

    def current(self) -> dict[str, int]:
        return ranks_to_units(self.schedule.phases[-1].ranks, self.units)

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        self.collector.on_step_end(step, loss, model)
        if not self.policy.due(step):
            return
        reads = self.spectra(model) if self.spectra is not None else self.collector.signals()
        decision = self.policy.decide(step, self.current(), reads)
        event = decision.event(self.schedule.budget_params)
        self.events.append(event)
        if not decision.applied:
            logger.info("hydra-rank step %d: allocation kept (predicted %.4f -> %.4f)", step,
                        decision.predicted_before, decision.predicted_after)
            return
        rng = np.random.default_rng([self.seed, step])
        HydraRankAllocator._apply_units(model, decision.ranks, previous=decision.old, rng=rng)
        self.schedule.phases.append(Phase(step, units_to_ranks(decision.ranks)))
        logger.info("hydra-rank step %d: re-allocated %d rank units (%d grown), predicted loss %.4f -> %.4f", step,
                    event["ranks_moved"], event["ranks_grown"], decision.predicted_before, decision.predicted_after)
