"""Tiny bundles for the runtime tests, exported once and cached between sessions.

Exporting even the tiny preset takes about a minute on two cores, so the bundle is kept under
pytest's cache directory, keyed by a hash of the SDK sources and the export settings: a change to
the exporter or the model/adapter/quant/data code re-exports it.

The bundle: ``tiny`` int8, LoRA r_max=4 (alpha 8) on the language model's q/v projections, a
two-phase rank schedule (all r=4; from step 6 the v projections drop to r=2), batch size 4.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = r"language_model\.model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"
PHASE_STEP = 6
SETTINGS = {"preset": "tiny", "quant": "int8", "r": 4, "alpha": 8, "targets": TARGETS, "phase_step": PHASE_STEP, "batch": 4}


def _sources_hash(fmt: str) -> str:
    digest = hashlib.sha256(json.dumps({**SETTINGS, "format": fmt}, sort_keys=True).encode())
    folders = ("export", "mobile_peft/core", "mobile_peft/models", "mobile_peft/adapters", "mobile_peft/quant", "mobile_peft/data")
    files = [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]
    for path in [*files, ROOT / "mobile_peft/allocators/schedule.py"]:
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def tiny_model():
    """The exported model before export: tiny int8 + LoRA on q/v (deterministic, seed 0)."""
    from mobile_peft.adapters import LoraConfig, apply_adapters
    from mobile_peft.models import build_model

    model, tokenizer = build_model("tiny", quant="int8", seed=0)
    apply_adapters(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    return model, tokenizer


def two_phase_schedule(model):
    from mobile_peft.allocators.schedule import Phase, RankSchedule, model_slots

    modules = model_slots(model)
    full = {m: {"lora": 4} for m in modules}
    later = {m: {"lora": 2 if m.endswith("v_proj") else 4} for m in modules}
    budget = sum(4 * s["lora"]["params_per_rank"] for s in modules.values())
    return RankSchedule("uniform", "lora", budget, modules, [Phase(0, full), Phase(PHASE_STEP, later)])


def export_tiny(fmt: str, out: Path) -> Path:
    from mobile_peft.export.bundle import export_bundle

    model, tokenizer = tiny_model()
    export_bundle((model, tokenizer), fmt, out, schedule=two_phase_schedule(model), batch_size=SETTINGS["batch"])
    return out


def _cached_bundle(request, fmt: str) -> Path:
    cache = Path(request.config.cache.mkdir("mobile-peft-runtime-bundles"))
    target = cache / f"{fmt}-{_sources_hash(fmt)}"
    if not (target / "manifest.json").is_file():
        for old in cache.glob(f"{fmt}-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = cache / f".tmp-{fmt}"
        shutil.rmtree(tmp, ignore_errors=True)
        export_tiny(fmt, tmp)
        tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def pte_bundle(request) -> Path:
    pytest.importorskip("executorch")
    return _cached_bundle(request, "pte")


@pytest.fixture(scope="session")
def onnx_bundle(request) -> Path:
    pytest.importorskip("onnxruntime.training")
    return _cached_bundle(request, "onnx")
