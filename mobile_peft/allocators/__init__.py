"""Rank allocators (uniform, HyDRA, ARD-LoRA) and the ``RankSchedule`` they produce.

>>> from mobile_peft.allocators import get_allocator, resolve_budget, train_with_allocator
>>> # budget = resolve_budget(model, budget_rank=2); allocator = get_allocator("hydra-rank")
>>> # run = train_with_allocator(model, train_ds, eval_ds, TrainConfig(steps=60), allocator, budget)
"""

from .base import Allocator, DynamicSession, active_params, budget_from_rank, check_budget, resolve_budget
from .registry import ALLOCATORS, get_allocator
from .run import AllocatedRun, BudgetMonitor, finish_allocation, start_allocation, train_with_allocator
from .schedule import BUDGET_TOLERANCE, Phase, RankSchedule, current_schedule, model_slots

# Each allocator folder registers itself in ALLOCATORS when imported.
from . import ard, hydra_rank, uniform  # noqa: E402, F401  isort: skip

__all__ = [
    "ALLOCATORS",
    "BUDGET_TOLERANCE",
    "AllocatedRun",
    "Allocator",
    "BudgetMonitor",
    "DynamicSession",
    "Phase",
    "RankSchedule",
    "active_params",
    "budget_from_rank",
    "check_budget",
    "current_schedule",
    "finish_allocation",
    "get_allocator",
    "model_slots",
    "resolve_budget",
    "start_allocation",
    "train_with_allocator",
]
