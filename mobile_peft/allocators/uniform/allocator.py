"""``uniform``: the same rank on every slot (fixed-rank LoRA), the baseline of every comparison."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...core.errors import ConfigError
from ...core.schedule import units_to_ranks
from ..base import Allocator, adapter_kind, fill_budget, schedule_from_ranks, unit_costs
from ..registry import ALLOCATORS
from ..schedule import BUDGET_TOLERANCE, RankSchedule


@ALLOCATORS.register("uniform")
class UniformAllocator(Allocator):
    """Rank ``r`` everywhere, the largest ``r`` that fits the budget; a budget between two uniform
    ranks is topped up one slot at a time in module order (so it stays within 1%)."""

    name = "uniform"

    def plan(self, model: nn.Module, train_ds: Any, eval_ds: Any, budget: int) -> RankSchedule:
        costs = unit_costs(model)
        per_rank = sum(ppr for _, ppr in costs.values())
        r = min(int(budget * (1 + BUDGET_TOLERANCE)) // per_rank, min(r_max for r_max, _ in costs.values()))
        if r < 1:
            raise ConfigError(f"budget {budget:,} is below one rank on every slot ({per_rank:,}); raise it.")
        order = {u: i for i, u in enumerate(costs)}
        # Top-up (budget between uniform ranks): earlier modules first, deterministically.
        def gain(rank: int, i: int, r: int = r) -> float:
            return 1.0 if rank < r else (1e-6 / (1 + i) if rank == r else -1.0)

        gains = {u: (lambda rank, i=order[u]: gain(rank, i)) for u in costs}
        ranks = fill_budget(gains, costs, budget, start=dict.fromkeys(costs, 0))
        return schedule_from_ranks(model, self.name, adapter_kind(model), budget, units_to_ranks(ranks))
