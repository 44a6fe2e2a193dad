"""``mobile-peft bench reliability`` (``make reliability``): the fault-injection and fuzz campaigns
at full size, with the figures the reliability issue asks for -- inputs tried per fuzz target,
kills survived, corrupt checkpoints found (must be 0), data lost (must be 0).

Bundles: the ``tiny`` preset exported to ``pte`` and ``onnx`` once into the cache directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_reliability"]


def _bundles(cache: Path, formats: list[str]) -> dict[str, Path]:
    from ..adapters import LoraConfig, apply_adapters
    from ..export import export_bundle
    from ..models import build_model
    from ._cache import bundle_path, is_exported

    out = {}
    for fmt in formats:
        path = bundle_path(cache, "reliability-tiny", fmt)
        if not is_exported(path):
            model, tokenizer = build_model("tiny", quant="int8", seed=0)
            apply_adapters(model, LoraConfig(r=4, lora_alpha=8, target_modules=model.config.default_targets))
            export_bundle((model, tokenizer), fmt, path, batch_size=4)
        out[fmt] = path
    return out


def run_reliability(out: Path, cache: Path, kills: int = 20, fuzz_examples: int = 2000,
                    formats: tuple[str, ...] = ("pte", "onnx")) -> dict[str, Any]:
    from .faults import kill_campaign
    from .fuzz import TARGETS, run_target

    start = time.perf_counter()
    fuzz = {}
    for name in sorted(TARGETS):
        t = time.perf_counter()
        fuzz[name] = {"inputs_tried": run_target(name, fuzz_examples, seed=1), "escaped": 0,
                      "seconds": round(time.perf_counter() - t, 1)}
    faults = {}
    for fmt, bundle in _bundles(cache, list(formats)).items():
        faults[fmt] = kill_campaign(bundle, cache / f"kills-{fmt}", kills=kills)
    result = {"fuzz": fuzz, "faults": faults, "seconds": round(time.perf_counter() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
