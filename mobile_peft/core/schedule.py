"""``RankSchedule``: the result of every rank allocator, as data, and the bundle's rank schedule.

A schedule names, for every adapted module and each of its rank slots (LoRA: ``lora``; Hydra:
``parallel`` and ``sequential``), the maximum rank ``r_max``, what one rank costs
(``params_per_rank``) and, in a bundle, the branch's constant factor ``scale`` (``alpha / r_max``),
and the rank that is active in each *phase* (a step range). Ranks are applied through rank masks,
so changing phase never changes a tensor shape: the exporters write the schedule into the bundle
manifest and a phone feeds the masks of the current phase as graph inputs, in the order of
``mask_inputs``.

JSON layout (``version`` 1)::

    {
      "schema": "mobile-peft/rank-schedule", "version": 1,
      "allocator": "hydra-rank", "adapter": "lora", "budget_params": 83456, "dropout": 0.0,
      "modules": {"language_model.model.layers.0.self_attn.q_proj":
                    {"slots": {"lora": {"r_max": 16, "params_per_rank": 256, "scale": 1.0}}}, ...},
      "phases": [{"start_step": 0, "ranks": {"<module>": {"lora": 8}, ...},
                  "masks": {"<module>": {"lora": [1.0, 0.5, ...]}}}, ...],   # masks: optional (soft)
      "mask_inputs": [{"module": "<module>", "slot": "lora", "r_max": 16,
                       "input": "<module>.lora_rank_mask"}, ...],               # bundles only
      "performance_model": null | {...}                                        # plans only
    }

A phase lists every module. A phase's ``masks`` (optional, per module/slot) override the default
prefix mask ``[1]*rank + [0]*(r_max - rank)`` with soft values (ARD-LoRA). The budget is checked
on load: every phase's trainable parameters (sum of rank * params_per_rank) must be within
:data:`BUDGET_TOLERANCE` (1%) of ``budget_params``, or below it.

numpy and the standard library only: the phone-side runtime reads bundles with this very code;
the authoring layer's ``mobile_peft.allocators.RankSchedule`` subclasses it to apply masks to a
torch model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from . import contract
from .errors import ConfigError
from .units import split_unit, unit_key

__all__ = [
    "BUDGET_TOLERANCE",
    "SCHEMA",
    "VERSION",
    "MaskInput",
    "Phase",
    "RankSchedule",
    "Ranks",
    "prefix_mask",
    "ranks_to_units",
    "units_to_ranks",
]

SCHEMA = "mobile-peft/rank-schedule"
VERSION = 1
BUDGET_TOLERANCE = 0.01

Ranks = dict[str, dict[str, int]]  # module -> slot -> active rank
SlotInfo = dict[str, Any]  # {"r_max": int, "params_per_rank": int, "scale": float (bundles)}


def prefix_mask(rank: int, r_max: int) -> list[float]:
    """The hard mask of ``rank`` active ranks out of ``r_max``: ``[1]*rank + [0]*(r_max - rank)``."""
    return [1.0] * int(rank) + [0.0] * (int(r_max) - int(rank))


@dataclass
class Phase:
    start_step: int
    ranks: Ranks
    masks: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            contract.PhaseKey.START_STEP: self.start_step,
            contract.PhaseKey.RANKS: self.ranks,
        }
        if self.masks:
            d[contract.PhaseKey.MASKS] = self.masks
        return d


@dataclass(frozen=True)
class MaskInput:
    """One rank-mask input of a bundle's graphs, in graph-input order."""

    module: str
    slot: str
    r_max: int

    @property
    def input(self) -> str:
        return contract.mask_input_name(self.module, self.slot)

    def to_dict(self) -> dict[str, Any]:
        K = contract.MaskInputKey
        return {K.MODULE: self.module, K.SLOT: self.slot, K.R_MAX: self.r_max, K.INPUT: self.input}


@dataclass
class RankSchedule:
    allocator: str
    adapter: str
    budget_params: int
    modules: dict[str, dict[str, SlotInfo]]
    phases: list[Phase]
    performance_model: dict[str, Any] | None = None
    mask_inputs: list[MaskInput] = field(default_factory=list)
    dropout: float = 0.0

    # -- validation -----------------------------------------------------------------------------
    def phase_params(self, phase: Phase) -> int:
        return self.params(phase.ranks)

    def params(self, ranks: Ranks) -> int:
        """Trainable numbers active at ``ranks`` (sum of rank x params_per_rank)."""
        return sum(
            int(r) * int(self.modules[m][s]["params_per_rank"])
            for m, slots in ranks.items()
            for s, r in slots.items()
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
            bad_rank = False
            for module, slots in phase.ranks.items():
                for slot, rank in slots.items():
                    info = self.modules.get(module, {}).get(slot)
                    if info is None:
                        if module in self.modules:
                            out.append(f"phase {i}: module {module!r} has no slot {slot!r}")
                            bad_rank = True
                        continue
                    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= info["r_max"]:
                        out.append(
                            f"phase {i}: rank {rank!r} of {module}.{slot} is outside 0..r_max={info['r_max']}"
                        )
                        bad_rank = True
                    mask = phase.masks.get(module, {}).get(slot)
                    if mask is not None and len(mask) != info["r_max"]:
                        out.append(
                            f"phase {i}: mask of {module}.{slot} has {len(mask)} values; r_max is {info['r_max']}"
                        )
            if not unknown and not bad_rank:
                used = self.phase_params(phase)
                if used > self.budget_params * (1 + BUDGET_TOLERANCE):
                    out.append(
                        f"phase {i} uses {used:,} trainable parameters, over the budget of {self.budget_params:,} (+1%)"
                    )
        for j, entry in enumerate(self.mask_inputs):
            info = self.modules.get(entry.module, {}).get(entry.slot)
            if info is None:
                out.append(
                    f"mask_inputs[{j}] names {entry.module}.{entry.slot}, which the schedule does not have"
                )
            elif info["r_max"] != entry.r_max:
                out.append(
                    f"mask_inputs[{j}] ({entry.module}.{entry.slot}) has r_max {entry.r_max}; the module has {info['r_max']}"
                )
        return out

    def validate(self) -> Self:
        problems = self.problems()
        if problems:
            raise ConfigError("invalid rank schedule:\n  - " + "\n  - ".join(problems))
        return self

    # -- use ------------------------------------------------------------------------------------
    def phase_index(self, step: int) -> int:
        """Index of the phase active at ``step`` (the last one starting at or before it)."""
        index = 0
        for i, phase in enumerate(self.phases):
            if phase.start_step <= step:
                index = i
        return index

    def phase_at(self, step: int) -> Phase:
        return self.phases[self.phase_index(step)]

    def mask(self, phase: Phase, module: str, slot: str) -> list[float]:
        """The mask values of ``module``'s ``slot`` in ``phase`` (soft values, else the prefix mask)."""
        soft = phase.masks.get(module, {}).get(slot)
        if soft is not None:
            return list(soft)
        return prefix_mask(phase.ranks[module][slot], self.modules[module][slot]["r_max"])

    def input_masks(
        self, ranks: Ranks, soft: dict[str, dict[str, list[float]]] | None = None
    ) -> list[np.ndarray]:
        """One float32 ``[r_max]`` mask per graph input (``mask_inputs`` order): ``soft`` values where
        given, else the prefix mask of ``ranks``."""
        phase = Phase(0, ranks, soft or {})
        return [np.asarray(self.mask(phase, e.module, e.slot), dtype=np.float32) for e in self.mask_inputs]

    def phase_masks(self, index: int) -> list[np.ndarray]:
        """The graph-input masks of phase ``index``."""
        phase = self.phases[index]
        return self.input_masks(phase.ranks, phase.masks)

    def ranks(self, index: int) -> Ranks:
        return {m: {s: int(r) for s, r in slots.items()} for m, slots in self.phases[index].ranks.items()}

    def units(self) -> dict[str, dict[str, int]]:
        """Allocation units (``path::slot`` -> ``{"r_max", "params_per_rank"}``) with ``r_max > 0``."""
        return {
            unit_key(m, s): {"r_max": int(i["r_max"]), "params_per_rank": int(i["params_per_rank"])}
            for m, slots in self.modules.items()
            for s, i in slots.items()
            if int(i["r_max"]) > 0
        }

    def scale(self, module: str, slot: str) -> float:
        """The branch's constant factor ``alpha / r_max``."""
        info = self.modules[module][slot]
        if "scale" not in info:
            raise ConfigError(
                f"rank_schedule.modules[{module!r}].slots[{slot!r}] has no 'scale' (alpha / r_max); "
                "re-export the bundle with a mobile-peft that records adapter scales."
            )
        return float(info["scale"])

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self, performance_model: bool = True) -> dict[str, Any]:
        K = contract.ScheduleKey
        d: dict[str, Any] = {
            K.SCHEMA: SCHEMA,
            K.VERSION: VERSION,
            K.ALLOCATOR: self.allocator,
            K.ADAPTER: self.adapter,
            K.BUDGET_PARAMS: self.budget_params,
            K.DROPOUT: self.dropout,
            K.MODULES: {m: {K.SLOTS: slots} for m, slots in self.modules.items()},
            K.PHASES: [p.to_dict() for p in self.phases],
        }
        if self.mask_inputs:
            d[K.MASK_INPUTS] = [e.to_dict() for e in self.mask_inputs]
        if performance_model:
            d[K.PERFORMANCE_MODEL] = self.performance_model
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "rank schedule") -> Self:
        """Parse and validate; every problem is reported in one :class:`ConfigError`."""
        K = contract.ScheduleKey
        if not isinstance(d, dict):
            raise ConfigError(f"invalid {where}: expected a JSON object, got {type(d).__name__}.")
        problems = []
        if d.get(K.SCHEMA) != SCHEMA:
            problems.append(f"schema is {d.get(K.SCHEMA)!r}; expected {SCHEMA!r}")
        if d.get(K.VERSION) != VERSION:
            problems.append(f"version is {d.get(K.VERSION)!r}; this mobile-peft reads version {VERSION}")
        problems += [f"missing key {k!r}" for k in contract.RANK_SCHEDULE_KEYS if k not in d]
        if problems:
            raise ConfigError(f"invalid {where}:\n  - " + "\n  - ".join(problems))
        structure = _structure_problems(d)
        if structure:
            raise ConfigError(f"invalid {where}:\n  - " + "\n  - ".join(structure[:20]))
        modules = {
            m: {s: {k: (float(v) if k == contract.SlotKey.SCALE else int(v)) for k, v in info.items() if k in contract.SLOT_KEYS}
                for s, info in v[K.SLOTS].items()}
            for m, v in d[K.MODULES].items()
        }
        phases = [
            Phase(int(p[contract.PhaseKey.START_STEP]), {m: dict(r) for m, r in p[contract.PhaseKey.RANKS].items()},
                  {m: {s: [float(x) for x in v] for s, v in slots.items()} for m, slots in (p.get(contract.PhaseKey.MASKS) or {}).items()})
            for p in d[K.PHASES]
        ]
        mask_inputs = [
            MaskInput(e[contract.MaskInputKey.MODULE], e[contract.MaskInputKey.SLOT], int(e[contract.MaskInputKey.R_MAX]))
            for e in d.get(K.MASK_INPUTS) or []
        ]
        budget = int(d[K.BUDGET_PARAMS])
        dropout = float(d.get(K.DROPOUT) or 0.0)
        schedule = cls(
            d[K.ALLOCATOR],
            d[K.ADAPTER],
            budget,
            modules,
            phases,
            d.get(K.PERFORMANCE_MODEL),
            mask_inputs,
            dropout,
        )
        problems = schedule.problems()
        if problems:
            raise ConfigError(f"invalid {where}:\n  - " + "\n  - ".join(problems))
        return schedule

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """A schedule JSON file (as written by :meth:`save` / ``mobile-peft plan``)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"rank schedule {str(path)!r} does not exist; make one with `mobile-peft plan`."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"rank schedule {path} is not valid JSON ({exc}).") from None
        return cls.from_dict(data, where=f"rank schedule {path}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _structure_problems(d: dict[str, Any]) -> list[str]:
    """Types of every field a schedule is built from (the data is untrusted: a bundle's manifest)."""
    K, S, P, M = contract.ScheduleKey, contract.SlotKey, contract.PhaseKey, contract.MaskInputKey
    out = []
    if not isinstance(d[K.ALLOCATOR], str) or not isinstance(d[K.ADAPTER], str):
        out.append("allocator and adapter must be strings")
    if not _is_int(d[K.BUDGET_PARAMS]) or d[K.BUDGET_PARAMS] < 0:
        out.append(f"budget_params is {d[K.BUDGET_PARAMS]!r}; expected a whole number >= 0")
    if K.DROPOUT in d and not (_is_number(d[K.DROPOUT]) and 0 <= d[K.DROPOUT] < 1):
        out.append(f"dropout is {d[K.DROPOUT]!r}; expected a probability in [0, 1)")
    modules = d[K.MODULES]
    if not isinstance(modules, dict):
        return [*out, f"modules is a {type(modules).__name__}, expected an object"]
    for m, v in modules.items():
        slots = v.get(K.SLOTS) if isinstance(v, dict) else None
        if not isinstance(slots, dict):
            out.append(f"modules[{m!r}] has no slots object")
            continue
        for slot, info in slots.items():
            if not isinstance(info, dict) or not all(k in info for k in (S.R_MAX, S.PARAMS_PER_RANK)):
                out.append(f"modules[{m!r}].slots[{slot!r}] needs r_max and params_per_rank")
            elif not (_is_int(info[S.R_MAX]) and info[S.R_MAX] >= 0 and _is_int(info[S.PARAMS_PER_RANK]) and info[S.PARAMS_PER_RANK] >= 0):
                out.append(f"modules[{m!r}].slots[{slot!r}] r_max/params_per_rank must be whole numbers >= 0")
            elif S.SCALE in info and not _is_number(info[S.SCALE]):
                out.append(f"modules[{m!r}].slots[{slot!r}].scale is {info[S.SCALE]!r}; expected a finite number")
    phases = d[K.PHASES]
    if not isinstance(phases, list):
        return [*out, f"phases is a {type(phases).__name__}, expected a list"]
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict) or not _is_int(phase.get(P.START_STEP)) or not isinstance(phase.get(P.RANKS), dict):
            out.append(f"phases[{i}] needs a whole-number start_step and a ranks object")
            continue
        for m, ranks in phase[P.RANKS].items():
            if not isinstance(ranks, dict) or not all(isinstance(s, str) and _is_int(r) for s, r in ranks.items()):
                out.append(f"phases[{i}].ranks[{m!r}] must map slot names to whole numbers")
        masks = phase.get(P.MASKS, {})  # absent: no soft masks; present: an object (null or [] is an error)
        if not isinstance(masks, dict) or not all(
            isinstance(slots, dict) and all(isinstance(v, list) and all(_is_number(x) for x in v) for v in slots.values())
            for slots in masks.values()
        ):
            out.append(f"phases[{i}].masks must map module -> slot -> a list of finite numbers")
    entries = d.get(K.MASK_INPUTS, [])  # absent: none; present: a list (null is an error)
    if not isinstance(entries, list):
        return [*out, f"mask_inputs is a {type(entries).__name__}, expected a list"]
    for j, e in enumerate(entries):
        if not (isinstance(e, dict) and isinstance(e.get(M.MODULE), str) and isinstance(e.get(M.SLOT), str) and _is_int(e.get(M.R_MAX))):
            out.append(f"mask_inputs[{j}] needs module, slot (strings) and r_max (a whole number)")
        elif e.get(M.INPUT) != contract.mask_input_name(e[M.MODULE], e[M.SLOT]):
            out.append(f"mask_inputs[{j}].input is {e.get(M.INPUT)!r}; expected "
                       f"{contract.mask_input_name(e[M.MODULE], e[M.SLOT])!r} (the graph input's name)")
    return out


def units_to_ranks(ranks: dict[str, int]) -> Ranks:
    """``{"path::slot": r}`` -> ``{path: {slot: r}}``."""
    out: Ranks = {}
    for key, r in ranks.items():
        module, slot = split_unit(key)
        out.setdefault(module, {})[slot] = int(r)
    return out


def ranks_to_units(ranks: Ranks, units: dict[str, Any]) -> dict[str, int]:
    """``{path: {slot: r}}`` -> ``{"path::slot": r}`` for the given units."""
    return {u: int(ranks[split_unit(u)[0]][split_unit(u)[1]]) for u in units}
