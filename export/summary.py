"""What is inside a bundle, as data (``mobile-peft inspect`` prints it); validates first."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

from . import contract
from .contract import Key
from .manifest import BundleError, validate_bundle

__all__ = ["summarize_bundle"]


def _summary(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    trainable = manifest[Key.TRAINABLE]
    n_trainable = 0
    for entry in trainable:
        numel = 1
        for dim in entry["shape"]:
            numel *= dim
        n_trainable += numel
    schedule = manifest[Key.RANK_SCHEDULE]
    rows = []
    for i, phase in enumerate(schedule["phases"]):
        for module, slots in phase["ranks"].items():
            for slot, rank in slots.items():
                r_max = schedule["modules"][module]["slots"][slot]["r_max"]
                rows.append({"phase": i, "start_step": phase["start_step"], "module": module, "slot": slot, "rank": rank, "r_max": r_max})
    spec = manifest[Key.INPUT_SPEC]
    return {
        "bundle": str(bundle),
        "format": manifest[Key.FORMAT],
        "schema_version": manifest[Key.SCHEMA_VERSION],
        "model": {k: manifest[Key.MODEL][k] for k in contract.MODEL_KEYS},
        "files": [{"path": f["path"], "size": f["size"], "sha256": f["sha256"], "verified": True} for f in manifest[Key.FILES]],
        "total_bytes": sum(f["size"] for f in manifest[Key.FILES]),
        "trainable_tensors": len(trainable),
        "trainable_parameters": n_trainable,
        "backbone": manifest[Key.BACKBONE],
        "rank_schedule": {"allocator": schedule["allocator"], "adapter": schedule["adapter"], "budget_params": schedule["budget_params"],
                          "phases": len(schedule["phases"]), "table": rows},
        "input_spec": {k: spec[k] for k in contract.INPUT_SPEC_KEYS},
        "optimizer": manifest[Key.OPTIMIZER],
    }


def summarize_bundle(path: str | Path) -> dict[str, Any]:
    """Validate the bundle at ``path`` (directory or ``.zip``; every checksum is verified) and
    describe it. Raises :class:`~.manifest.BundleError` naming every problem."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(tmp)
            summary = _summary(path, validate_bundle(tmp))
        return summary
    if not path.exists():
        raise BundleError(path, ["does not exist"])
    return _summary(path, validate_bundle(path))
