"""``RankSchedule`` on a torch model: the core's schedule (:mod:`mobile_peft.core.schedule`, the
data and its JSON, which a phone reads too) plus what needs the model -- writing a phase's masks
into the adapters, checking the schedule fits them, and reading the masks they hold now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import torch
from torch import nn

from ..core import schedule as _core
from ..core.errors import ConfigError
from ..core.schedule import BUDGET_TOLERANCE, Phase

__all__ = ["BUDGET_TOLERANCE", "Phase", "RankSchedule", "current_schedule", "model_slots"]


class RankSchedule(_core.RankSchedule):
    """The core's :class:`~mobile_peft.core.schedule.RankSchedule`, applied to a model."""

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
            model_slots_ = layer.rank_slots()
            for slot, info in slots.items():
                if slot not in model_slots_:
                    problems.append(f"{module} has no slot {slot!r} (has {sorted(model_slots_)})")
                elif model_slots_[slot].r_max != info["r_max"]:
                    problems.append(f"{module}.{slot}: schedule r_max {info['r_max']} != model r_max {model_slots_[slot].r_max}")
        if problems:
            raise ConfigError("rank schedule does not fit the model:\n  - " + "\n  - ".join(problems[:20]))

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

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> Self:
        schedule = cls.read(path)
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
            if m.tolist() != _core.prefix_mask(r, slot.r_max):
                masks.setdefault(path, {})[name] = m.tolist()
    kind = adapter or type(next(iter(layers.values()))).__name__.removesuffix("Layer").lower()
    schedule = RankSchedule(allocator, kind, 0, modules, [Phase(0, ranks, masks)])
    schedule.budget_params = schedule.phase_params(schedule.phases[0])
    return schedule.validate()
