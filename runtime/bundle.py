"""A bundle as the runtime sees it: the validated manifest, its files, and the rank schedule as
numpy masks in graph-input order.

Validation (required keys, schema version, every file's size and sha256, all problems in one
error) is the contract owner's :func:`mobile_peft.export.manifest.validate_bundle`, which reads
JSON and hashes files only (no torch).
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.errors import ConfigError
from mobile_peft.export import contract
from mobile_peft.export.contract import Key

__all__ = ["Bundle", "Schedule", "Trainable"]


@dataclass(frozen=True)
class Trainable:
    """One trainable tensor: its graph name, adapter module path, rank slot, parameter name, shape."""

    name: str
    module: str
    slot: str
    param: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Schedule:
    """The manifest's ``rank_schedule``: per module/slot ``r_max`` and cost, phases, mask order."""

    allocator: str
    adapter: str
    budget_params: int
    modules: dict[str, dict[str, dict[str, Any]]]  # module -> slot -> {"r_max", "params_per_rank", ...}
    phases: list[dict[str, Any]]
    mask_order: list[tuple[str, str]]  # (module, slot) in graph-input order
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, d: dict[str, Any]) -> Schedule:
        modules = {m: dict(v.get("slots", v)) for m, v in d["modules"].items()}
        phases = sorted(d["phases"], key=lambda p: int(p["start_step"]))
        order = [(e["module"], e["slot"]) for e in d["masks"]]
        return cls(d["allocator"], d["adapter"], int(d["budget_params"]), modules, phases, order, d)

    def phase_index(self, step: int) -> int:
        index = 0
        for i, phase in enumerate(self.phases):
            if int(phase["start_step"]) <= step:
                index = i
        return index

    def ranks(self, phase: int) -> dict[str, dict[str, int]]:
        return {m: {s: int(r) for s, r in slots.items()} for m, slots in self.phases[phase]["ranks"].items()}

    def masks(self, ranks: dict[str, dict[str, int]], soft: dict[str, dict[str, list[float]]] | None = None) -> list[np.ndarray]:
        """One float32 ``[r_max]`` mask per graph input: ``soft`` values where given, else the
        prefix mask ``[1]*rank + [0]*(r_max - rank)``."""
        out = []
        for module, slot in self.mask_order:
            values = (soft or {}).get(module, {}).get(slot)
            r_max = int(self.modules[module][slot]["r_max"])
            if values is None:
                r = int(ranks[module][slot])
                values = [1.0] * r + [0.0] * (r_max - r)
            out.append(np.asarray(values, dtype=np.float32))
        return out

    def phase_masks(self, phase: int) -> list[np.ndarray]:
        return self.masks(self.ranks(phase), self.phases[phase].get("masks"))

    def params(self, ranks: dict[str, dict[str, int]]) -> int:
        """Trainable numbers active at ``ranks`` (sum of rank x params_per_rank)."""
        return sum(int(r) * int(self.modules[m][s]["params_per_rank"]) for m, slots in ranks.items() for s, r in slots.items())

    @property
    def has_scales(self) -> bool:
        """Whether every slot records its branch scale (needed to write the personal adapter)."""
        return all("scale" in i or "alpha" in i for slots in self.modules.values() for i in slots.values())

    def scale(self, module: str, slot: str) -> float:
        """The branch's constant factor ``alpha / r_max`` (needed to write the personal adapter)."""
        info = self.modules[module][slot]
        if "scale" in info:
            return float(info["scale"])
        if "alpha" in info:
            return float(info["alpha"]) / int(info["r_max"])
        raise ConfigError(
            f"the bundle's rank_schedule.modules[{module!r}].slots[{slot!r}] has no 'scale' (alpha / r_max); "
            "re-export the bundle with a mobile-peft that records adapter scales."
        )


@dataclass
class Bundle:
    """A validated bundle directory (a ``.zip`` is extracted to a temporary directory first)."""

    path: Path
    manifest: dict[str, Any]
    _tmp: Any = None

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        from mobile_peft.export.manifest import read_manifest, validate_bundle

        path = Path(path)
        tmp = None
        if path.is_file() and zipfile.is_zipfile(path):
            tmp = tempfile.TemporaryDirectory(prefix="mobile-peft-bundle-")
            with zipfile.ZipFile(path) as archive:
                archive.extractall(tmp.name)
            path = Path(tmp.name)
        manifest = validate_bundle(path) if verify else read_manifest(path)
        return cls(path, manifest, tmp)

    # -- sections --------------------------------------------------------------------------------
    @property
    def format(self) -> str:
        return self.manifest[Key.FORMAT]

    @property
    def input_spec(self) -> dict[str, Any]:
        return self.manifest[Key.INPUT_SPEC]

    @property
    def batch_size(self) -> int:
        return int(self.input_spec["batch_size"])

    @property
    def optimizer(self) -> dict[str, Any]:
        return self.manifest[Key.OPTIMIZER]

    @property
    def methods(self) -> dict[str, Any]:
        return self.manifest[Key.METHODS]

    @property
    def performance_model(self) -> dict[str, Any] | None:
        return self.manifest.get(Key.PERFORMANCE_MODEL)

    @property
    def trainable(self) -> list[Trainable]:
        return [
            Trainable(t["name"], t["module"], t["slot"], t.get("param") or t["name"].rsplit(".", 1)[-1], tuple(t["shape"]))
            for t in self.manifest[Key.TRAINABLE]
        ]

    @property
    def schedule(self) -> Schedule:
        return Schedule.from_manifest(self.manifest[Key.RANK_SCHEDULE])

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def tokenizer_path(self) -> Path:
        return self.file(self.input_spec.get("tokenizer_file") or contract.TOKENIZER_FILE)

    def encoder(self):  # noqa: ANN201 - avoids importing tokenizers for callers that only read
        from .data import Encoder

        return Encoder(self.input_spec, self.tokenizer_path)
