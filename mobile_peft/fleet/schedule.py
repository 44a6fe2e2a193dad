"""The server's rank schedule: the per-module ranks each phone trains in the next round.

``declared``
    Every round, the ranks the phone declared when it registered (its device tier's). The
    baselines' setting, and ``rank-aware``'s without a schedule.
``spectral`` (ours)
    HyDRA's per-module allocation, made on the server from what the fleet learns. After each
    aggregated round the server decomposes every slot's *round change* of the global adapter,
    ``dW = B'A' - BA`` (``sigma_1 >= sigma_2 >= ...``; exact, from the factors), and keeps an
    exponential average of ``sigma_j^2``. By Eckart-Young, a rank-``r`` slice of that slot can
    carry at most ``sum_{j<=r} sigma_j^2`` of the fleet's latest movement there, so the next ranks
    of each phone maximise ``sum_slots sum_{j<=r_slot} sigma_j^2`` within the phone's own parameter
    budget -- the parameters of its declared ranks, so its bytes and its training cost stay its
    tier's -- with every slot kept at rank >= 1. The objective is separable and each slot's gain
    is non-increasing in ``r``, so the core's greedy fill (best gain per parameter first, the same
    one the on-device re-allocation uses) solves it up to the parameter costs. Round 1 (no change
    seen yet) uses the declared ranks. Phones of one tier get the same schedule; different tiers
    get different budgets.

numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mobile_peft.core.errors import ConfigError
from mobile_peft.core.perf_model import greedy_fill
from mobile_peft.core.schedule import Ranks

from .rules import factored_svd
from .updates import Layout

__all__ = ["SCHEDULES", "SpectralSchedule", "round_change_spectra"]

SCHEDULES = ("declared", "spectral")


def round_change_spectra(layout: Layout, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict:
    """Per slot, the squared singular values (descending, ``r_max`` of them) of ``B'A' - BA``."""
    out = {}
    for key in layout.slots:
        down, up = layout.names(key)
        # B'A' - BA = [B', -B] @ [A'; A]: one factored SVD of rank <= 2 r_max.
        stacked_up = np.concatenate([after[up], -before[up]], axis=1)
        stacked_down = np.concatenate([after[down], before[down]], axis=0)
        _, s, _ = factored_svd(stacked_up, stacked_down)
        out[key] = np.square(s[: layout.r_max(key)])
    return out


def _unit(key: tuple[str, str]) -> str:
    return f"{key[0]}::{key[1]}"


@dataclass
class SpectralSchedule:
    """See the module docstring; ``decay`` weighs the older rounds' spectra."""

    layout: Layout
    decay: float = 0.5
    spectra: dict = field(default_factory=dict)  # slot -> EMA of the round change's sigma^2
    _by_budget: dict = field(default_factory=dict, repr=False)  # budget -> ranks, for the current spectra

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"schedule decay={self.decay}; expected 0 <= decay < 1.")

    def observe(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
        for key, s in round_change_spectra(self.layout, before, after).items():
            old = self.spectra.get(key)
            self.spectra[key] = s if old is None else self.decay * old + (1.0 - self.decay) * s
        self._by_budget = {}

    def ranks(self, declared: Ranks) -> Ranks:
        """A phone's next ranks within the parameter budget of its ``declared`` ranks."""
        if not self.spectra:
            return declared
        slots = self.layout.slots
        budget = sum(self.layout.rank(declared, k) * self.layout.params_per_rank(k) for k in slots)
        if sum(min(1, self.layout.r_max(k)) * self.layout.params_per_rank(k) for k in slots) > budget:
            return declared  # a phone below rank 1 everywhere keeps its own ranks
        if budget not in self._by_budget:  # only the budget matters: phones of one tier share the plan
            self._by_budget[budget] = self._plan(budget)
        return self._by_budget[budget]

    def _plan(self, budget: int) -> Ranks:
        slots = self.layout.slots
        costs = {_unit(k): (self.layout.r_max(k), self.layout.params_per_rank(k)) for k in slots}
        gains = {_unit(k): (lambda r, s=self.spectra[k]: float(s[r]) if r < s.size else 0.0) for k in slots}
        start = {_unit(k): min(1, self.layout.r_max(k)) for k in slots}
        chosen = greedy_fill(gains, costs, budget, start)
        out: Ranks = {}
        for key in slots:
            out.setdefault(key[0], {})[key[1]] = int(chosen[_unit(key)])
        return out
