"""The allocator protocol, the budget, and helpers shared by every allocator.

An allocator decides, for a fixed budget of trainable parameters, the rank of every rank slot of
every adapted module (see :mod:`mobile_peft.adapters.base`), and may change them during
fine-tuning by writing the rank masks. Its result is a :class:`RankSchedule`.

Budget accounting (one rule for all allocators): the trainable parameters of a configuration are
``sum over slots of nonzero(mask) * params_per_rank`` -- exactly ``AdapterLayer.active_params()``.
Soft ARD masks count every non-zero entry; they are frozen for export as
``max(1, round(r0 * alpha))`` ranks. Every allocator keeps this count within
``BUDGET_TOLERANCE`` (1%) of the budget at every step.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..adapters.base import adapter_layers
from ..core.errors import ConfigError
from ..core.perf_model import greedy_fill
from ..core.schedule import Ranks
from ..core.units import unit_key
from .schedule import BUDGET_TOLERANCE, Phase, RankSchedule, model_slots

__all__ = [
    "Allocator",
    "DynamicSession",
    "active_params",
    "apply_ranks",
    "budget_from_rank",
    "check_budget",
    "fill_budget",
    "resolve_budget",
    "schedule_from_ranks",
    "unit_costs",
]

logger = logging.getLogger(__name__)

def unit_costs(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{"module::slot": (r_max, params_per_rank)}`` for every rank slot of the model."""
    return {
        unit_key(m, s): (info["r_max"], info["params_per_rank"])
        for m, slots in model_slots(model).items()
        for s, info in slots.items()
        if info["r_max"] > 0
    }


def budget_from_rank(model: nn.Module, r: int) -> int:
    """Trainable parameters of uniform rank ``r`` on every rank slot of the model's adapters."""
    costs = unit_costs(model)
    if not costs:
        raise ConfigError("the model has no adapter layers; apply adapters before computing a budget.")
    too_small = sorted(k for k, (r_max, _) in costs.items() if r_max < r)
    if too_small:
        raise ConfigError(f"budget rank {r} exceeds r_max of {too_small[:3]}; apply adapters with r_max >= {r}.")
    return sum(r * ppr for _, ppr in costs.values())


def resolve_budget(model: nn.Module, budget_params: int | None = None, budget_rank: int | None = None) -> int:
    """The budget in parameters, given as parameters or as "uniform LoRA of rank r" (exactly one)."""
    if (budget_params is None) == (budget_rank is None):
        raise ConfigError("give exactly one of budget_params (a parameter count) or budget_rank (a uniform rank).")
    if budget_rank is not None:
        if budget_rank < 1:
            raise ConfigError(f"budget_rank={budget_rank}; expected a rank >= 1.")
        return budget_from_rank(model, budget_rank)
    assert budget_params is not None
    costs = unit_costs(model)
    ceiling = sum(r_max * ppr for r_max, ppr in costs.values())
    floor = min((ppr for _, ppr in costs.values()), default=0)
    if not floor <= budget_params <= ceiling:
        raise ConfigError(
            f"budget_params={budget_params:,} is outside what the adapters can hold ({floor:,}..{ceiling:,}); "
            "raise r_max of the adapters or lower the budget."
        )
    return int(budget_params)


def active_params(model: nn.Module) -> int:
    """Trainable parameters at the current rank masks (see the module docstring)."""
    return sum(layer.active_params() for layer in adapter_layers(model).values())


def check_budget(used: int, budget: int, where: str = "") -> None:
    if abs(used - budget) > BUDGET_TOLERANCE * budget:
        raise ConfigError(f"{where}allocation uses {used:,} parameters; the budget is {budget:,} (±1%).")


def fill_budget(
    gain: Mapping[str, Any],
    costs: Mapping[str, tuple[int, int]],
    budget: int,
    start: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Greedy allocation: repeatedly give one rank to the unit with the best marginal gain per
    parameter (``gain[unit](r)``: the value of going from rank ``r`` to ``r + 1``) until nothing
    fits in the budget. With concave gains this is optimal up to one rank. The search itself is
    :func:`~mobile_peft.core.perf_model.greedy_fill` (numpy-only, shipped to
    devices)."""
    return greedy_fill(gain, costs, budget, start)


def schedule_from_ranks(model: nn.Module, allocator: str, adapter: str, budget: int, ranks: Ranks) -> RankSchedule:
    """A one-phase schedule; slots not named in ``ranks`` (e.g. ``r_max == 0``) get rank 0."""
    modules = model_slots(model)
    full = {m: {s: int(ranks.get(m, {}).get(s, 0)) for s in slots} for m, slots in modules.items()}
    return RankSchedule(allocator, adapter, int(budget), modules, [Phase(0, full)]).validate()


@torch.no_grad()
def apply_ranks(model: nn.Module, ranks: Ranks) -> None:
    layers = adapter_layers(model)
    for module, slots in ranks.items():
        for slot, r in slots.items():
            layers[module].set_rank(slot, int(r))


def adapter_kind(model: nn.Module) -> str:
    layers = adapter_layers(model)
    if not layers:
        raise ConfigError("the model has no adapter layers; apply adapters first.")
    return type(next(iter(layers.values()))).__name__.removesuffix("Layer").lower()


@dataclass
class DynamicSession:
    """What an allocator adds to one fine-tuning run: trainer callbacks (re-allocation), an extra
    loss (ARD's regulariser, whose parameters the trainer also optimises) and the schedule, which
    grows a phase at every re-allocation. ``finish(model)`` returns the final schedule."""

    schedule: RankSchedule
    callbacks: list[Any] = field(default_factory=list)
    extra_loss: nn.Module | None = None

    def finish(self, model: nn.Module) -> RankSchedule:
        return self.schedule


class Allocator(ABC):
    """A rank allocator: ``plan`` searches a schedule, ``session`` runs its dynamic part."""

    name: ClassVar[str]

    @abstractmethod
    def plan(self, model: nn.Module, train_ds: Any, eval_ds: Any, budget: int) -> RankSchedule:
        """A schedule for ``model`` (which carries adapters with their ``r_max``) within ``budget``.

        ``eval_ds`` is never used to fit anything; allocators that need validation data hold out
        part of ``train_ds``. The model's weights are left as they were."""

    def session(
        self, model: nn.Module, schedule: RankSchedule, total_steps: int, train_ds: Any = None
    ) -> DynamicSession:
        """Apply ``schedule`` to ``model`` and return the callbacks of the dynamic phases (none by
        default: the schedule is static). ``train_ds``: the data the run trains on, for dynamic
        phases that measure something on it (``hydra-rank``'s spectral re-allocation)."""
        schedule.check_model(model)
        schedule.apply(model, 0)
        replay = [PhaseReplay(schedule)] if len(schedule.phases) > 1 else []
        return DynamicSession(schedule=schedule, callbacks=replay)


class PhaseReplay:
    """Trainer callback that applies a fixed multi-phase schedule (phase ``start_step`` = the
    number of optimiser steps already taken when it becomes active)."""

    def __init__(self, schedule: RankSchedule) -> None:
        self.schedule = schedule
        self.starts = {p.start_step for p in schedule.phases}

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        if step in self.starts:
            self.schedule.apply(model, step)
