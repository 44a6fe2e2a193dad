"""HyDRA's dynamic phase, one implementation for the authoring trainer and the phone.

Two pieces, both numpy only:

* :class:`RankSignals` -- per allocation unit (``path::slot``), one step's signal is
  ``sum(g_down[a]^2) + sum(g_up[:, a]^2) / |a|`` over the active rank rows/columns ``a`` (squared
  gradient per rank: a diagonal-Fisher estimate of what one more rank of this slot is worth); an
  exponential moving average over steps; :meth:`RankSignals.signals` reports its square root.
* :class:`Reallocation` -- every ``every`` completed steps, and only while at least ``every``
  steps remain (a new allocation that would train for fewer steps is not worth its re-grown
  columns), ask the shipped performance model (:mod:`.perf_model`) for the best allocation within
  the budget and apply it when the predicted loss falls by at least ``min_gain`` (relative).

Growing a slot re-initialises its new rank rows/columns as LoRA does (:func:`grow_init`: down rows
kaiming-uniform, up columns zero, so the function is unchanged); active columns are never touched;
shrinking masks the last columns. Nothing changes shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .perf_model import MODEL_KIND, SPECTRAL_KIND, check_model, predict_loss, propose_allocation

__all__ = ["Decision", "RankSignals", "Reallocation", "gradient_spectrum", "grow_init", "rank_signal"]

DEFAULT_DECAY = 0.8
DEFAULT_MIN_GAIN = 0.002
# What a caller feeds each model kind at a re-allocation point (:meth:`Reallocation.decide`).
_FEEDS = {MODEL_KIND: "per-step gradient RMS values", SPECTRAL_KIND: "gradient spectra measured at that step"}


def rank_signal(g_down: np.ndarray, g_up: np.ndarray, active: np.ndarray) -> float:
    """One step's squared gradient per active rank of a slot: ``g_down [r_max, fan_in]``,
    ``g_up [out, r_max]``, ``active`` a boolean ``[r_max]`` (or index array) of active ranks."""
    active = np.asarray(active)
    n = int(active.sum()) if active.dtype == bool else int(active.size)
    if n == 0:
        return 0.0
    down = np.square(g_down[active], dtype=np.float64).sum()
    up = np.square(g_up[:, active], dtype=np.float64).sum()
    return float(down + up) / n


@dataclass
class RankSignals:
    """EMA of :func:`rank_signal` per unit (units never observed are absent)."""

    decay: float = DEFAULT_DECAY
    sq: dict[str, float] = field(default_factory=dict)

    def observe(self, unit: str, value: float) -> None:
        old = self.sq.get(unit)
        self.sq[unit] = value if old is None else self.decay * old + (1 - self.decay) * value

    def signals(self) -> dict[str, float]:
        """unit -> RMS gradient per active rank."""
        return {k: math.sqrt(v) for k, v in self.sq.items()}

    def state(self) -> dict[str, Any]:
        return {"sq": dict(self.sq)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.sq = {k: float(v) for k, v in state.get("sq", {}).items()}


@dataclass(frozen=True)
class Decision:
    """What one re-allocation point decided (``ranks`` are unit -> rank; equal to ``old`` when kept)."""

    step: int
    applied: bool
    old: dict[str, int]
    ranks: dict[str, int]
    predicted_before: float
    predicted_after: float
    params: int

    def changed(self) -> dict[str, list[int]]:
        return {u: [self.old[u], self.ranks[u]] for u in self.old if self.old[u] != self.ranks[u]}

    def event(self, budget_params: int) -> dict[str, Any]:
        return {
            "kind": "realloc",
            "step": self.step,
            "applied": self.applied,
            "predicted_loss_before": round(self.predicted_before, 6),
            "predicted_loss_after": round(self.predicted_after, 6),
            "params": self.params,
            "budget_params": budget_params,
            "ranks_moved": sum(abs(a - b) for a, b in self.changed().values()),
            "ranks_grown": sum(max(0, b - a) for a, b in self.changed().values()),
            "changed": self.changed() if self.applied else {},
        }


class Reallocation:
    """When and how to re-allocate ranks with a fitted performance model."""

    def __init__(
        self,
        model: Mapping[str, Any] | None,
        units: Mapping[str, Mapping[str, int]],
        budget: int,
        every: int,
        total_steps: int,
        min_gain: float = DEFAULT_MIN_GAIN,
        kinds: tuple[str, ...] = (MODEL_KIND,),
    ) -> None:
        """``kinds``: the model kinds the caller can feed (:meth:`decide`'s ``signals``): a phone feeds
        per-step gradient RMS values (``logrank`` only); the authoring trainer can also measure
        gradient spectra at each point (``spectral``)."""
        if not model:
            raise ConfigError(
                "on-device re-allocation needs a schedule planned by hydra-rank: it has no performance_model. "
                "Plan with `--allocator hydra-rank` and re-export, or turn re-allocation off."
            )
        try:
            kind = check_model(model)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if kind not in kinds:
            fed = ", ".join(f"{k} (fed {_FEEDS[k]})" for k in kinds)
            raise ConfigError(
                f"re-allocation here reads {fed}; this schedule's model is {kind}. Plan with the default "
                "hydra-rank model (model=logrank), or turn re-allocation off."
            )
        if every < 0:
            raise ConfigError(f"re-allocation every={every} steps; expected >= 0 (0 turns it off).")
        self.model, self.units, self.budget = dict(model), dict(units), int(budget)
        self.every, self.total_steps, self.min_gain = int(every), int(total_steps), float(min_gain)
        self.min_rank = int(self.model.get("min_rank", 1))

    def due(self, step: int) -> bool:
        """After ``step`` completed steps: a re-allocation point?"""
        return (
            self.every > 0 and step > 0 and step % self.every == 0 and step + self.every <= self.total_steps
        )

    def decide(self, step: int, ranks: Mapping[str, int], signals: Mapping[str, Any]) -> Decision:
        """``signals``: what the model's kind reads per unit (:func:`~.perf_model.predict_loss`)."""
        old = {u: int(ranks[u]) for u in self.units}
        new = propose_allocation(signals, self.model, self.units, self.budget, self.min_rank)
        before = predict_loss(self.model, old, signals, self.units)
        after = predict_loss(self.model, new, signals, self.units)
        applied = new != old and before - after > self.min_gain * abs(before)
        chosen = new if applied else old
        params = sum(chosen[u] * int(self.units[u]["params_per_rank"]) for u in self.units)
        return Decision(step, bool(applied), old, chosen, before, after, int(params))


def grow_init(rng: np.random.Generator, rows: int, fan_in: int) -> np.ndarray:
    """Fresh LoRA down rows ``[rows, fan_in]``: uniform in ``±1/sqrt(fan_in)`` (``nn.Linear``'s
    kaiming_uniform(a=sqrt(5)))."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=(rows, fan_in)).astype(np.float32)


def gradient_spectrum(g_up: np.ndarray) -> list[float]:
    """Squared singular values (descending, ``min(out, r_max)`` of them) of a slot's up-projection
    gradient ``g_up [out, r_max]`` summed over a few batches with every rank column open.

    Why it measures what a rank buys: for ``y = W0 x + s * up @ diag(m) @ down @ x``,
    ``d loss / d up = s * G @ down.T * m`` with ``G [out, fan_in]`` the gradient of the frozen
    weight; with ``m = 1`` and random ``down`` rows this is a random sketch of ``G`` whose spectrum
    tracks ``G``'s, and the first-order loss decrease a rank-``r`` update can buy is about the sum of
    ``G``'s top ``r`` squared singular values (concave in ``r``). Opening a column whose ``up`` column
    is zero leaves the forward pass unchanged (Hydra's sequential branch: the same, on ``h``)."""
    g = np.asarray(g_up, dtype=np.float64)
    return [float(v) for v in np.square(np.linalg.svd(g, compute_uv=False))]
