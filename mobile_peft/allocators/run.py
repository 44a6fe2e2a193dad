"""One fine-tuning run under a rank allocator: plan (unless a schedule is given), apply, train
with the allocator's dynamic callbacks, freeze. Used by ``mobile-peft finetune --allocator``
and by the benchmark."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..train.trainer import TrainConfig, TrainerCallback, TrainResult, train
from .base import Allocator, DynamicSession, active_params, check_budget, resolve_budget
from .schedule import RankSchedule

__all__ = ["AllocatedRun", "BudgetMonitor", "finish_allocation", "start_allocation", "train_with_allocator"]

logger = logging.getLogger(__name__)


class BudgetMonitor:
    """Trainer callback recording the active trainable parameters after every step."""

    def __init__(self) -> None:
        self.used: list[int] = []

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        self.used.append(active_params(model))


@dataclass
class AllocatedRun:
    schedule: RankSchedule
    train: TrainResult
    plan_seconds: float
    budget_trace: list[int]

    @property
    def reallocations(self) -> int:
        return len(self.schedule.phases) - 1


def train_with_allocator(
    model: nn.Module,
    train_ds: Any,
    eval_ds: Any,
    config: TrainConfig,
    allocator: Allocator,
    budget: int,
    schedule: RankSchedule | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> AllocatedRun:
    """Plan (or use ``schedule``), then train ``model`` (carrying adapters) in place. The budget
    is checked after every step; the returned schedule is the one to export."""
    start = time.perf_counter()
    if schedule is None:
        schedule = allocator.plan(model, train_ds, eval_ds, budget)
    plan_seconds = time.perf_counter() - start
    session = allocator.session(model, schedule, config.steps, train_ds)
    check_budget(active_params(model), budget, "at step 0: ")
    monitor = BudgetMonitor()
    result = train(model, train_ds, config, callbacks=[*session.callbacks, monitor, *callbacks], extra_loss=session.extra_loss)
    final = session.finish(model)
    for step, used in enumerate(monitor.used, 1):
        check_budget(used, budget, f"at step {step}: ")
    check_budget(active_params(model), budget, "after training: ")
    for phase in final.phases[1:]:
        logger.info("%s re-allocated at step %d", allocator.name, phase.start_step)
    return AllocatedRun(schedule=final, train=result, plan_seconds=plan_seconds, budget_trace=monitor.used)


def start_allocation(
    model: nn.Module,
    allocator: Allocator,
    adapter_config: Any,
    train_ds: Any,
    eval_ds: Any,
    steps: int,
    budget_params: int | None = None,
    budget_rank: int | None = None,
    schedule: RankSchedule | None = None,
) -> tuple[DynamicSession, BudgetMonitor]:
    """For callers that run the trainer themselves (``mobile-peft finetune --allocator``): apply
    ``adapter_config`` (built with the allocator's ``r_max``), resolve the budget (a loaded
    ``schedule`` brings its own), plan, and start the dynamic session. Pass
    ``session.callbacks + [monitor]`` and ``session.extra_loss`` to the trainer, then call
    :func:`finish_allocation`."""
    from ..adapters import apply_adapters

    apply_adapters(model, adapter_config)
    if schedule is not None:
        schedule.check_model(model)
        budget = schedule.budget_params
    else:
        budget = resolve_budget(model, budget_params=budget_params, budget_rank=budget_rank)
        schedule = allocator.plan(model, train_ds, eval_ds, budget)
    return allocator.session(model, schedule, steps, train_ds), BudgetMonitor()


def finish_allocation(model: nn.Module, session: DynamicSession, monitor: BudgetMonitor) -> RankSchedule:
    """Freeze the session's schedule, check the budget of every step, log each re-allocation."""
    schedule = session.finish(model)
    for step, used in enumerate(monitor.used, 1):
        check_budget(used, schedule.budget_params, f"at step {step}: ")
    for phase in schedule.phases[1:]:
        logger.info("%s re-allocated ranks at step %d", schedule.allocator, phase.start_step)
    return schedule
