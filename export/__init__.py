"""Exporters: ExecuTorch .pte (+ .ptd), ONNX Runtime training artifacts, Core ML. Installed as mobile_peft.export.

Pipeline (one straight line per format, each stage testable alone): wrappers (masks as inputs,
loss as output 0) -> capture -> joint graph / training artifacts -> lower -> serialise -> manifest.
Names shared with the phone live in :mod:`.contract`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mobile_peft._lazy import lazy_getattr

from . import contract

# Imported lazily (PEP 562): the on-device runtime reads `contract` and `manifest` and must not
# pull in torch export machinery or the authoring layer through this package's __init__.
_LAZY = {
    "BundleResult": "bundle",
    "OptimizerDefaults": "bundle",
    "export_bundle": "bundle",
    "prepare_model": "bundle",
    "zip_bundle": "bundle",
    "export_demo_bundles": "demo",
    "BundleError": "manifest",
    "read_manifest": "manifest",
    "validate_bundle": "manifest",
    "validate_manifest": "manifest",
    "summarize_bundle": "summary",
    "EvalWrapper": "wrappers",
    "MaskSlot": "wrappers",
    "TrainingWrapper": "wrappers",
    "mask_slots": "wrappers",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


if TYPE_CHECKING:
    from .bundle import BundleResult, OptimizerDefaults, export_bundle, prepare_model, zip_bundle
    from .demo import export_demo_bundles
    from .manifest import BundleError, read_manifest, validate_bundle, validate_manifest
    from .summary import summarize_bundle
    from .wrappers import EvalWrapper, MaskSlot, TrainingWrapper, mask_slots

__all__ = [
    "BundleError",
    "BundleResult",
    "EvalWrapper",
    "MaskSlot",
    "OptimizerDefaults",
    "TrainingWrapper",
    "contract",
    "export_bundle",
    "export_demo_bundles",
    "mask_slots",
    "prepare_model",
    "read_manifest",
    "summarize_bundle",
    "validate_bundle",
    "validate_manifest",
    "zip_bundle",
]
