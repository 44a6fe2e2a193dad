"""On-device rank re-allocation for ``hydra-rank`` bundles.

The phone has what HyDRA's dynamic phase needs: the runtime's own gradients (per-unit signal =
RMS gradient per active rank, an EMA over steps, as the authoring layer's ``SignalCollector``)
and the fitted performance model the bundle ships (``manifest.performance_model``, a few dozen
numbers). Every ``every`` steps it asks the model for the best allocation within the schedule's
budget (:func:`propose_allocation`) and switches masks if the predicted loss falls by at least
``min_gain`` (relative). Growing a slot re-initialises its new rank rows/columns as LoRA does
(down rows kaiming-uniform, up columns zero: the function is unchanged); active columns are never
touched; shrinking masks the last columns. Nothing changes shape, so the graph is the same.

The model's code is ``mobile_peft/allocators/hydra_rank/perf_model.py``, which imports numpy and
the standard library only; it is loaded from its file so that the allocator package (which
imports torch and the eager trainer) is not.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mobile_peft.errors import ConfigError

from .bundle import Schedule, Trainable

__all__ = ["Reallocator", "load_perf_model"]

logger = logging.getLogger(__name__)
_PERF_MODEL = ("allocators", "hydra_rank", "perf_model.py")


def load_perf_model() -> ModuleType:
    """The torch-free performance-model module, loaded from its file (no package ``__init__``)."""
    spec = importlib.util.find_spec("mobile_peft")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("cannot locate the mobile_peft package to load the hydra-rank performance model.")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_PERF_MODEL)
    if not path.is_file():
        raise ConfigError(f"the hydra-rank performance model {path} is missing; reinstall mobile-peft.")
    module_spec = importlib.util.spec_from_file_location("mobile_peft_runtime_perf_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _unit(module: str, slot: str) -> str:
    return f"{module}::{slot}"  # the allocators' unit key (mobile_peft/allocators/_modules.py)


class Reallocator:
    """Signals from the runtime's gradients + the shipped model -> new ranks within the budget."""

    def __init__(self, schedule: Schedule, model: dict[str, Any], trainable: list[Trainable], every: int,
                 total_steps: int, min_gain: float = 0.002, decay: float = 0.8, seed: int = 0) -> None:
        if not model:
            raise ConfigError(
                "--on-device-realloc needs a bundle exported from a hydra-rank schedule: this manifest has no "
                "performance_model. Plan with `--allocator hydra-rank` and re-export, or drop --on-device-realloc."
            )
        self.perf = load_perf_model()
        self.schedule, self.model = schedule, model
        self.every, self.total_steps, self.min_gain, self.decay, self.seed = every, total_steps, min_gain, decay, seed
        self.min_rank = int(model.get("min_rank", 1))
        self.units = {_unit(m, s): {"r_max": int(i["r_max"]), "params_per_rank": int(i["params_per_rank"])}
                      for m, slots in schedule.modules.items() for s, i in slots.items() if int(i["r_max"]) > 0}
        self.pairs: dict[str, dict[str, Trainable]] = {}
        for t in trainable:
            role = "down" if t.param.endswith(("_A", "_down")) else "up"
            self.pairs.setdefault(_unit(t.module, t.slot), {})[role] = t
        self.sq: dict[str, float] = {}

    # -- state (checkpointed) ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"sq": self.sq}

    def load_state(self, state: dict[str, Any]) -> None:
        self.sq = {k: float(v) for k, v in state.get("sq", {}).items()}

    # -- per step ----------------------------------------------------------------------------------
    def observe(self, grads: dict[str, np.ndarray], ranks: dict[str, dict[str, int]]) -> None:
        """EMA of squared gradient per active rank of every unit (active = the first ``rank``)."""
        for unit, pair in self.pairs.items():
            module, slot = unit.rsplit("::", 1)
            n = int(ranks[module][slot])
            if n == 0:
                continue
            g_down, g_up = grads[pair["down"].name][:n], grads[pair["up"].name][:, :n]
            value = (float(np.square(g_down, dtype=np.float64).sum()) + float(np.square(g_up, dtype=np.float64).sum())) / n
            old = self.sq.get(unit)
            self.sq[unit] = value if old is None else self.decay * old + (1 - self.decay) * value

    def due(self, step: int) -> bool:
        """After ``step`` completed steps: a re-allocation point (never at the last step)."""
        return self.every > 0 and step % self.every == 0 and 0 < step < self.total_steps

    def propose(self, ranks: dict[str, dict[str, int]]) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
        """(new ranks, event) -- new ranks equal ``ranks`` when the model predicts too little gain."""
        signals = {u: math.sqrt(v) for u, v in self.sq.items()}
        old = {u: ranks[u.rsplit("::", 1)[0]][u.rsplit("::", 1)[1]] for u in self.units}
        new = self.perf.propose_allocation(signals, self.model, self.units, self.schedule.budget_params, self.min_rank)
        before = self.perf.predict_loss(self.model, old, signals, self.units)
        after = self.perf.predict_loss(self.model, new, signals, self.units)
        params = sum(new[u] * self.units[u]["params_per_rank"] for u in self.units)
        applied = new != old and before - after > self.min_gain * abs(before)
        event = {"kind": "realloc", "applied": bool(applied), "predicted_loss_before": round(before, 6),
                 "predicted_loss_after": round(after, 6), "params": int(params), "budget_params": self.schedule.budget_params,
                 "changed": {u: [old[u], new[u]] for u in self.units if old[u] != new[u]} if applied else {}}
        if not applied:
            return ranks, event
        out = {m: dict(slots) for m, slots in ranks.items()}
        for unit, r in new.items():
            module, slot = unit.rsplit("::", 1)
            out[module][slot] = int(r)
        return out, event

    def grow(self, params: dict[str, np.ndarray], old: dict[str, dict[str, int]], new: dict[str, dict[str, int]], step: int) -> None:
        """Fresh LoRA init of newly activated rank rows/columns (seeded by step: resumable)."""
        rng = np.random.default_rng([self.seed, step])
        for unit, pair in self.pairs.items():
            module, slot = unit.rsplit("::", 1)
            a, b = int(old[module][slot]), int(new[module][slot])
            if b <= a:
                continue
            down, up = params[pair["down"].name], params[pair["up"].name]
            bound = 1.0 / math.sqrt(down.shape[1])
            down[a:b] = rng.uniform(-bound, bound, size=(b - a, down.shape[1])).astype(np.float32)
            up[:, a:b] = 0.0
