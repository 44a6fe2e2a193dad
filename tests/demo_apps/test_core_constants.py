"""The Kotlin core (android_demo/core) mirrors a few constants of the SDK that are not bundle
contract (the contract is generated into ``Contract.kt``): schema names, limits, defaults, file
names of the run directory. Each is read back from the Kotlin source here and compared with the
Python value, so a change in the SDK fails this test instead of drifting silently.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from mobile_peft.core import adapter_files, datasets, perf_model, realloc, schedule, units
from runtime import checkpoint, trainer

CORE = (
    Path(__file__).resolve().parents[2]
    / "android_demo"
    / "core"
    / "src"
    / "main"
    / "kotlin"
    / "org"
    / "mobilepeft"
    / "core"
)
_CONST = re.compile(r"^\s*const val ([A-Z][A-Z0-9_]*)\s*(?::\s*\w+)?\s*=\s*(.+?)\s*(?://.*)?$", re.M)


def _value(text: str) -> Any:
    if text.startswith('"'):
        return text[1:-1]
    return (
        float(text.rstrip("Lf").replace("_", "")) if "." in text else int(text.rstrip("L").replace("_", ""))
    )


def kotlin_constants(file: str) -> dict[str, Any]:
    return {name: _value(text) for name, text in _CONST.findall((CORE / file).read_text())}


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in fields(cls) if f.name == name)


@pytest.mark.parametrize(
    "file,name,value",
    [
        ("Schedule.kt", "SCHEMA", schedule.SCHEMA),
        ("Schedule.kt", "VERSION", schedule.VERSION),
        ("Schedule.kt", "BUDGET_TOLERANCE", schedule.BUDGET_TOLERANCE),
        ("Realloc.kt", "DEFAULT_DECAY", realloc.DEFAULT_DECAY),
        ("Realloc.kt", "DEFAULT_MIN_GAIN", realloc.DEFAULT_MIN_GAIN),
        ("PerfModel.kt", "MAX_FLOOR_SHARE", perf_model.MAX_FLOOR_SHARE),
        ("AdapterFiles.kt", "CONFIG_FILE", adapter_files.ADAPTER_CONFIG_NAME),
        ("AdapterFiles.kt", "WEIGHTS_FILE", adapter_files.ADAPTER_WEIGHTS_NAME),
        ("AdapterFiles.kt", "FORMAT_VERSION", adapter_files.FORMAT_VERSION),
        ("AdapterFiles.kt", "KEY_PREFIX", adapter_files.KEY_PREFIX),
        ("AdapterFiles.kt", "METADATA_KEY", adapter_files.METADATA_KEY),
        ("Units.kt", "SEPARATOR", units.UNIT_SEPARATOR),
        ("Datasets.kt", "MAX_IMAGE_PIXELS", datasets.MAX_IMAGE_PIXELS),
        ("Datasets.kt", "MAX_TEXT_CHARS", datasets.MAX_TEXT_CHARS),
        ("Checkpoints.kt", "DIR", checkpoint.CHECKPOINT_DIR),
        ("Checkpoints.kt", "PREFIX", checkpoint._PREFIX),
        ("Checkpoints.kt", "TMP", checkpoint._TMP),
        ("Checkpoints.kt", "META_FILE", checkpoint.META_FILE),
    ],
)
def test_mirrored_constant(file, name, value):
    assert kotlin_constants(file).get(name) == value, f"{file} {name} differs from the SDK's {value!r}"


def test_annotation_keys_and_groups():
    found = kotlin_constants("Datasets.kt")
    assert (found["IMAGE"], found["QUESTION"], found["ANSWER"]) == datasets._REQUIRED_KEYS
    groups = re.search(r"val GROUPS = listOf\(([^)]*)\)", (CORE / "PerfModel.kt").read_text()).group(1)
    assert tuple(re.findall(r'"([^"]+)"', groups)) == perf_model.GROUPS


def test_model_keys_are_the_fitted_models():
    found = kotlin_constants("PerfModel.kt")
    model = perf_model.fit_performance_model(
        [{"a.layers.0.q::lora": 1}, {"a.layers.0.q::lora": 2}],
        [1.0, 0.9],
        {},
        {"a.layers.0.q::lora": {"r_max": 4, "params_per_rank": 1}},
    )
    for key in ("FEATURE_NAMES", "WEIGHTS", "INTERCEPT"):
        assert found[key] in model
    assert found["MIN_RANK"] == "min_rank"  # read by Reallocation with a default of 1


def test_training_defaults():
    kt = (CORE / "Training.kt").read_text()
    assert f"val checkpointEvery: Int = {_default(trainer.TrainOptions, 'checkpoint_every')}," in kt
    assert f"val maxBadSteps: Int = {_default(trainer.TrainOptions, 'max_bad_steps')}," in kt
