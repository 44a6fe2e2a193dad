"""The published JSON Schema of ``manifest.json`` (draft 2020-12), made from the contract's key
lists and the declared field types (:data:`~.fields.FIELD_TYPES`) -- the very table the
validator checks, so the two cannot drift. ``python -m mobile_peft.core.schema`` writes
``mobile_peft/core/manifest.schema.json`` (shipped in the package; ``--check`` fails when it is
stale); ``mobile-peft inspect --schema`` prints it.

The schema covers structure and types; what a schema cannot say (each slot has one ``down`` and
one ``up`` tensor whose rank dimension is ``r_max``, phases within the budget, every named file
checksummed) only :func:`~.manifest.manifest_problems` checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import contract
from .contract import Key, MethodKey, ScheduleKey
from .fields import FIELD_TYPES

__all__ = ["SCHEMA_FILE", "manifest_schema"]

SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


def _object(section: str, required: tuple[str, ...], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {k: f.schema() for k, f in FIELD_TYPES.get(section, {}).items()}
    props.update(extra or {})
    return {"type": "object", "required": list(required), "properties": props}


def manifest_schema() -> dict[str, Any]:
    token_ids = f"{Key.INPUT_SPEC}.{contract.InputSpecKey.TOKEN_IDS}"
    slot = _object("slot", contract.SLOT_KEYS)
    phase = _object("phase", contract.PHASE_KEYS)
    schedule = {
        "type": "object",
        "required": list(contract.BUNDLE_RANK_SCHEDULE_KEYS),
        "properties": {
            ScheduleKey.SCHEMA: {"const": "mobile-peft/rank-schedule"},
            ScheduleKey.VERSION: {"const": 1},
            **{k: f.schema() for k, f in FIELD_TYPES["schedule"].items()},
            ScheduleKey.MODULES: {"type": "object", "additionalProperties": {
                "type": "object", "required": [ScheduleKey.SLOTS],
                "properties": {ScheduleKey.SLOTS: {"type": "object", "additionalProperties": slot}}}},
            ScheduleKey.PHASES: {"type": "array", "minItems": 1, "items": phase},
            ScheduleKey.MASK_INPUTS: {"type": "array", "items": _object("mask_input", contract.MASK_INPUT_KEYS)},
        },
    }
    pte_method = _object("pte_method", contract.PTE_TRAIN_METHOD_KEYS)
    methods_by_format = [
        {"if": {"properties": {Key.FORMAT: {"const": fmt}}},
         "then": {"properties": {Key.METHODS: {"required": list(keys)}}}}
        for fmt, keys in contract.METHOD_KEYS.items()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{contract.SCHEMA_NAME}/{contract.SCHEMA_VERSION}",
        "title": "mobile-peft bundle manifest",
        "description": "manifest.json of a trainable bundle; generated from mobile_peft/core/contract.py.",
        "type": "object",
        "required": list(contract.REQUIRED_KEYS),
        "properties": {
            **{k: f.schema() for k, f in FIELD_TYPES[""].items()},
            Key.SCHEMA: {"const": contract.SCHEMA_NAME},
            Key.SCHEMA_VERSION: {"enum": list(contract.SUPPORTED_SCHEMA_VERSIONS)},
            Key.FORMAT: {"enum": list(contract.FORMATS)},
            Key.MODEL: _object(Key.MODEL, contract.MODEL_KEYS),
            Key.INPUT_SPEC: _object(Key.INPUT_SPEC, contract.INPUT_SPEC_KEYS,
                                    {contract.InputSpecKey.TOKEN_IDS: _object(token_ids, contract.TOKEN_ID_KEYS)}),
            Key.METHODS: _object(Key.METHODS, (), {MethodKey.TRAIN: pte_method, MethodKey.EVAL: _object(
                "pte_method", contract.PTE_EVAL_METHOD_KEYS)}),
            Key.TRAINABLE: {"type": "array", "items": _object(Key.TRAINABLE, contract.TRAINABLE_KEYS,
                                                              {contract.TrainableKey.ROLE: {"enum": list(contract.ROLES)}})},
            Key.RANK_SCHEDULE: schedule,
            Key.OPTIMIZER: _object(Key.OPTIMIZER, contract.OPTIMIZER_KEYS),
            Key.BACKBONE: _object(Key.BACKBONE, contract.BACKBONE_KEYS),
            Key.MEMORY_BOUND: _object(Key.MEMORY_BOUND, contract.MEMORY_BOUND_KEYS),
            Key.FILES: {"type": "array", "items": _object(Key.FILES, contract.FILE_KEYS)},
        },
        "allOf": methods_by_format,
    }


def render() -> str:
    return json.dumps(manifest_schema(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        if not SCHEMA_FILE.is_file() or SCHEMA_FILE.read_text() != render():
            print(f"{SCHEMA_FILE} is stale; run `python -m mobile_peft.core.schema`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(render())
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
