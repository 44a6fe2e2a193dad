"""``RankSchedule``: the result of every rank allocator, as data.

A schedule names, for every adapted module and each of its rank slots (LoRA: ``lora``; Hydra:
``parallel`` and ``sequential``), the maximum rank ``r_max`` and the rank that is active in each
*phase* (a step range). Ranks are applied through the adapters' rank-mask buffers, so changing
phase never changes a tensor shape; the exporters write the schedule into the bundle manifest and
a phone feeds the masks of the current phase as inputs.

JSON layout (``version`` 1)::

    {
      "schema": "mobile-peft/rank-schedule", "version": 1,
      "allocator": "hydra-rank", "adapter": "lora", "budget_params": 83456,
      "modules": {"language_model.model.layers.0.self_attn.q_proj":
                    {"slots": {"lora": {"r_max": 16, "params_per_rank": 256}}}, ...},
      "phases": [{"start_step": 0, "ranks": {"<module>": {"lora": 8}, ...},
                  "masks": {"<module>": {"lora": [1.0, 0.5, ...]}}}, ...],   # masks: optional (soft)
      "performance_model": null | {...}
    }

A phase lists every module. ``masks`` (optional, per module/slot) overrides the default
prefix mask ``[1]*rank + [0]*(r_max - rank)`` with soft values (ARD-LoRA). The budget is checked
on load: every phase's trainable parameters (sum of rank * params_per_rank) must be within
``budget_tolerance`` (1%) of ``budget_params``, or below it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

SCHEMA = "mobile-peft/rank-schedule"
VERSION = 1
BUDGET_TOLERANCE = 0.01


@dataclass
class Phase:
    start_step: int
    ranks: dict[str, dict[str, int]]
    masks: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start_step": self.start_step, "ranks": self.ranks}
        if self.masks:
            d["masks"] = self.masks
        return d


@dataclass
class RankSchedule:
    allocator: str
    adapter: str
    budget_params: int
    modules: dict[str, dict[str, dict[str, int]]]  # module -> slot -> {"r_max", "params_per_rank"}
    phases: list[Phase]
    performance_model: dict[str, Any] | None = None

    # -- validation -----------------------------------------------------------------------------
    def phase_params(self, phase: Phase) -> int:
        return sum(
            rank * self.modules[m][s]["params_per_rank"] for m, slots in phase.ranks.items() for s, rank in slots.items()
        )

    def problems(self) -> list[str]:
        """Every problem of the schedule (empty when valid)."""
        out: list[str] = []
        if not self.phases:
            out.append("no phases: a schedule needs at least one phase starting at step 0")
        elif self.phases[0].start_step != 0:
            out.append(f"first phase starts at step {self.phases[0].start_step}; it must start at 0")
        starts = [p.start_step for p in self.phases]
        if starts != sorted(set(starts)):
            out.append(f"phase start steps {starts} are not strictly increasing")
        for i, phase in enumerate(self.phases):
            unknown = sorted(set(phase.ranks) - set(self.modules))
            if unknown:
                out.append(f"phase {i} names unknown modules {unknown[:3]}")
            missing = sorted(set(self.modules) - set(phase.ranks))
            if missing:
                out.append(f"phase {i} gives no rank for modules {missing[:3]}")
            for module, slots in phase.ranks.items():
                for slot, rank in slots.items():
                    info = self.modules.get(module, {}).get(slot)
                    if info is None:
                        if module in self.modules:
                            out.append(f"phase {i}: module {module!r} has no slot {slot!r}")
                        continue
                    if not isinstance(rank, int) or not 0 <= rank <= info["r_max"]:
                        out.append(f"phase {i}: rank {rank!r} of {module}.{slot} is outside 0..r_max={info['r_max']}")
                    mask = phase.masks.get(module, {}).get(slot)
                    if mask is not None and len(mask) != info["r_max"]:
                        out.append(f"phase {i}: mask of {module}.{slot} has {len(mask)} values; r_max is {info['r_max']}")
            if not unknown and not any("outside" in p for p in out):
                used = self.phase_params(phase)
                if used > self.budget_params * (1 + BUDGET_TOLERANCE):
                    out.append(
                        f"phase {i} uses {used:,} trainable parameters, over the budget of {self.budget_params:,} (+1%)"
                    )
        return out

    def validate(self) -> RankSchedule:
        problems = self.problems()
        if problems:
            raise ConfigError("invalid rank schedule:\n  - " + "\n  - ".join(problems))
        return self

    def check_model(self, model: nn.Module) -> None:
        """The schedule's modules and slots exist in ``model`` with the same ``r_max``."""
        from ..adapters import adapter_layers

        layers = adapter_layers(model)
        problems = []
        for module, slots in self.modules.items():
            layer = layers.get(module)
            if layer is None:
                problems.append(f"module {module!r} is not an adapter layer of the model")
                continue
            model_slots = layer.rank_slots()
            for slot, info in slots.items():
                if slot not in model_slots:
                    problems.append(f"{module} has no slot {slot!r} (has {sorted(model_slots)})")
                elif model_slots[slot].r_max != info["r_max"]:
                    problems.append(f"{module}.{slot}: schedule r_max {info['r_max']} != model r_max {model_slots[slot].r_max}")
        if problems:
            raise ConfigError("rank schedule does not fit the model:\n  - " + "\n  - ".join(problems[:20]))

    # -- use ------------------------------------------------------------------------------------
    def phase_at(self, step: int) -> Phase:
        current = self.phases[0]
        for phase in self.phases:
            if phase.start_step <= step:
                current = phase
        return current

    def mask(self, phase: Phase, module: str, slot: str) -> list[float]:
        soft = phase.masks.get(module, {}).get(slot)
        if soft is not None:
            return list(soft)
        r, r_max = phase.ranks[module][slot], self.modules[module][slot]["r_max"]
        return [1.0] * r + [0.0] * (r_max - r)

    @torch.no_grad()
    def apply(self, model: nn.Module, step: int = 0) -> Phase:
        """Write the masks of the phase active at ``step`` into the model's adapters."""
        from ..adapters import adapter_layers

        phase = self.phase_at(step)
        layers = adapter_layers(model)
        for module, slots in phase.ranks.items():
            for slot in slots:
                layers[module].set_rank_mask(slot, torch.tensor(self.mask(phase, module, slot)))
        return phase

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "allocator": self.allocator,
            "adapter": self.adapter,
            "budget_params": self.budget_params,
            "modules": {m: {"slots": slots} for m, slots in self.modules.items()},
            "phases": [p.to_dict() for p in self.phases],
            "performance_model": self.performance_model,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankSchedule:
        problems = []
        if d.get("schema") != SCHEMA:
            problems.append(f"schema is {d.get('schema')!r}; expected {SCHEMA!r}")
        if d.get("version") != VERSION:
            problems.append(f"version is {d.get('version')!r}; this mobile-peft reads version {VERSION}")
        for key in ("allocator", "adapter", "budget_params", "modules", "phases"):
            if key not in d:
                problems.append(f"missing key {key!r}")
        if problems:
            raise ConfigError("invalid rank schedule:\n  - " + "\n  - ".join(problems))
        try:
            modules = {m: {s: {"r_max": int(i["r_max"]), "params_per_rank": int(i["params_per_rank"])} for s, i in v["slots"].items()} for m, v in d["modules"].items()}
            phases = [Phase(int(p["start_step"]), {m: dict(s) for m, s in p["ranks"].items()}, p.get("masks") or {}) for p in d["phases"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid rank schedule: malformed modules/phases ({exc!r}).") from None
        return cls(d["allocator"], d["adapter"], int(d["budget_params"]), modules, phases, d.get("performance_model")).validate()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> RankSchedule:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"rank schedule {str(path)!r} does not exist; make one with `mobile-peft plan`.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"rank schedule {path} is not valid JSON ({exc}).") from None
        schedule = cls.from_dict(data)
        if model is not None:
            schedule.check_model(model)
        return schedule


def model_slots(model: nn.Module) -> dict[str, dict[str, dict[str, int]]]:
    """``modules`` of a schedule for ``model``'s adapter layers (their ``r_max`` and costs)."""
    from ..adapters import adapter_layers

    return {
        path: {name: {"r_max": s.r_max, "params_per_rank": s.params_per_rank} for name, s in layer.rank_slots().items()}
        for path, layer in adapter_layers(model).items()
    }


def current_schedule(model: nn.Module, allocator: str = "uniform", adapter: str | None = None) -> RankSchedule:
    """A one-phase schedule of the masks the model holds now (budget = what they use)."""
    from ..adapters import adapter_layers

    layers = adapter_layers(model)
    if not layers:
        raise ConfigError("the model has no adapter layers; apply adapters before building a rank schedule.")
    modules = model_slots(model)
    ranks: dict[str, dict[str, int]] = {}
    masks: dict[str, dict[str, list[float]]] = {}
    for path, layer in layers.items():
        ranks[path] = {}
        for name, slot in layer.rank_slots().items():
            m = slot.rank_mask.detach().float()
            r = int(torch.count_nonzero(m))
            ranks[path][name] = r
            if not torch.equal(m, torch.tensor([1.0] * r + [0.0] * (slot.r_max - r))):
                masks.setdefault(path, {})[name] = m.tolist()
    kind = adapter or type(next(iter(layers.values()))).__name__.removesuffix("Layer").lower()
    schedule = RankSchedule(allocator, kind, 0, modules, [Phase(0, ranks, masks)])
    schedule.budget_params = schedule.phase_params(schedule.phases[0])
    return schedule.validate()
