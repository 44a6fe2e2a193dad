"""Exporters: ExecuTorch .pte (+ .ptd), ONNX Runtime training artifacts, Core ML. Installed as mobile_peft.export.

Pipeline (one straight line per format, each stage testable alone): wrappers (masks as inputs,
loss as output 0) -> capture -> joint graph / training artifacts -> lower -> serialise -> manifest.
Formats are entries of :data:`~.formats.FORMATS`; the names shared with the phone and the manifest
itself live in the torch-free core (:mod:`mobile_peft.core.contract`, :mod:`mobile_peft.core.manifest`).
"""

from __future__ import annotations

from .bundle import BundleResult, export_bundle, prepare_model, zip_bundle
from .demo import export_demo_bundles
from .formats import FORMATS, ExportFormat, OptimizerDefaults
from .pte import PteOptions
from .wrappers import EvalWrapper, MaskSlot, TrainingWrapper, mask_slots

__all__ = [
    "FORMATS",
    "BundleResult",
    "EvalWrapper",
    "ExportFormat",
    "MaskSlot",
    "OptimizerDefaults",
    "PteOptions",
    "TrainingWrapper",
    "export_bundle",
    "export_demo_bundles",
    "mask_slots",
    "prepare_model",
    "zip_bundle",
]
