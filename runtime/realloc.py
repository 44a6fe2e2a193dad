"""On-device rank re-allocation for ``hydra-rank`` bundles: the core's decision
(:class:`mobile_peft.core.realloc.Reallocation`, the same one the authoring trainer runs) fed with
the runtime's own gradients and the performance model the bundle ships.

Signals are the core's :func:`~mobile_peft.core.realloc.rank_signal` over each slot's active ranks;
the tensors of a slot are found by their recorded roles (``down`` / ``up``). Growing a slot
re-initialises its new rows/columns with :func:`~mobile_peft.core.realloc.grow_init`, seeded by
``(seed, step)`` so a resumed run grows the same values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mobile_peft.core.contract import ROLE_DOWN, ROLE_UP
from mobile_peft.core.manifest import Trainable, slot_pairs
from mobile_peft.core.realloc import Decision, RankSignals, Reallocation, grow_init, rank_signal
from mobile_peft.core.schedule import Ranks, RankSchedule, ranks_to_units, units_to_ranks
from mobile_peft.core.units import unit_key

__all__ = ["Reallocator"]


class Reallocator:
    """Signals from the runtime's gradients + the shipped model -> new ranks within the budget."""

    def __init__(
        self,
        schedule: RankSchedule,
        model: dict[str, Any] | None,
        trainable: list[Trainable],
        every: int,
        total_steps: int,
        seed: int = 0,
    ) -> None:
        self.policy = Reallocation(model, schedule.units(), schedule.budget_params, every, total_steps)
        self.budget = schedule.budget_params
        self.seed = seed
        self.pairs = {unit_key(m, s): pair for (m, s), pair in slot_pairs(trainable).items()}
        self.signals = RankSignals()

    def state(self) -> dict[str, Any]:
        return self.signals.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.signals.load_state(state)

    def observe(self, grads: dict[str, np.ndarray], ranks: Ranks) -> None:
        """One step's signal of every unit with an active rank (active = the first ``rank``)."""
        for unit, n in ranks_to_units(ranks, self.policy.units).items():
            if n:
                pair = self.pairs[unit]
                self.signals.observe(
                    unit, rank_signal(grads[pair[ROLE_DOWN].name], grads[pair[ROLE_UP].name], np.arange(n))
                )

    def due(self, step: int) -> bool:
        return self.policy.due(step)

    def decide(self, step: int, ranks: Ranks) -> Decision:
        return self.policy.decide(step, ranks_to_units(ranks, self.policy.units), self.signals.signals())

    def grow(self, params: dict[str, np.ndarray], decision: Decision) -> Ranks:
        """Fresh LoRA init of newly activated rank rows/columns; returns the new ranks by module."""
        rng = np.random.default_rng([self.seed, decision.step])
        for unit, (a, b) in decision.changed().items():
            if b > a:
                down, up = params[self.pairs[unit][ROLE_DOWN].name], params[self.pairs[unit][ROLE_UP].name]
                down[a:b] = grow_init(rng, b - a, down.shape[1])
                up[:, a:b] = 0.0
        return units_to_ranks(decision.ranks)
