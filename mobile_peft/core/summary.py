"""What is inside a bundle, as data (``mobile-peft inspect`` prints it); validates first."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from . import contract
from .archive import extract_bundle_zip
from .errors import BundleError
from .manifest import Manifest, validate_bundle

__all__ = ["summarize_bundle"]


def _summary(bundle: Path, manifest: Manifest) -> dict[str, Any]:
    schedule = manifest.rank_schedule
    rows = [
        {
            "phase": i,
            "start_step": phase.start_step,
            "module": module,
            "slot": slot,
            "rank": rank,
            "r_max": schedule.modules[module][slot]["r_max"],
        }
        for i, phase in enumerate(schedule.phases)
        for module, slots in phase.ranks.items()
        for slot, rank in slots.items()
    ]
    F = contract.FileKey
    return {
        "bundle": str(bundle),
        "format": manifest.format,
        "schema_version": manifest.raw[contract.Key.SCHEMA_VERSION],
        "schema": "mobile_peft/core/manifest.schema.json (`mobile-peft inspect --schema`)",
        "model": {k: manifest.model[k] for k in contract.MODEL_KEYS},
        "files": [
            {F.PATH: f[F.PATH], F.SIZE: f[F.SIZE], F.SHA256: f[F.SHA256], "verified": True}
            for f in manifest.files
        ],
        "total_bytes": sum(f[F.SIZE] for f in manifest.files),
        "trainable_tensors": len(manifest.trainable),
        "trainable_parameters": sum(t.numel for t in manifest.trainable),
        "backbone": manifest.backbone,
        "rank_schedule": {
            "allocator": schedule.allocator,
            "adapter": schedule.adapter,
            "budget_params": schedule.budget_params,
            "phases": len(schedule.phases),
            "table": rows,
        },
        "input_spec": {k: manifest.raw[contract.Key.INPUT_SPEC][k] for k in contract.INPUT_SPEC_KEYS},
        "optimizer": manifest.optimizer,
    }


def summarize_bundle(path: str | Path) -> dict[str, Any]:
    """Validate the bundle at ``path`` (directory or ``.zip``; every checksum is verified) and
    describe it. Raises :class:`~.errors.BundleError` naming every problem."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with extract_bundle_zip(path) as tmp:  # traversal, links, duplicates and bombs refused first
            return _summary(path, validate_bundle(tmp))
    if not path.exists():
        raise BundleError(path, ["does not exist"])
    return _summary(path, validate_bundle(path))
