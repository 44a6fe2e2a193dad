"""Declared types of the manifest's fields: one table that both the validator
(:func:`~.manifest.manifest_problems`) and the published JSON Schema (:mod:`.schema`) are made from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

__all__ = ["FIELD_TYPES", "Field"]

# A file name inside the bundle: relative, no '..' segment, no backslash.
RELATIVE_PATH_PATTERN = r"^(?!/)(?!(.*/)?\.\.(/|$))[^\\]+$"


@dataclass(frozen=True)
class Field:
    """One JSON value's type: ``kind`` is a JSON Schema type name (``"null"`` may be added with
    ``nullable``); ``minimum`` for numbers, ``length`` / ``items`` for arrays, ``contains`` for
    strings that must hold a substring, ``path`` for file names inside the bundle, ``hex64`` for
    sha256 digests."""

    kind: str
    minimum: float | None = None
    exclusive: bool = False
    length: int | None = None
    items: Field | None = None
    contains: str | None = None
    path: bool = False
    hex64: bool = False
    nullable: bool = False

    def check(self, v: Any) -> bool:
        if v is None:
            return self.nullable
        if self.kind == "string":
            if not isinstance(v, str):
                return False
            if self.contains is not None and self.contains not in v:
                return False
            if self.path and not (v and "\\" not in v and not v.startswith("/") and ".." not in PurePosixPath(v).parts):
                return False
            return not self.hex64 or (len(v) == 64 and all(c in "0123456789abcdef" for c in v))
        if self.kind == "boolean":
            return isinstance(v, bool)
        if self.kind == "object":
            return isinstance(v, dict)
        if self.kind == "array":
            if not isinstance(v, list) or (self.length is not None and len(v) != self.length):
                return False
            return self.items is None or all(self.items.check(x) for x in v)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        if self.kind == "integer" and not isinstance(v, int):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.minimum is not None and (v <= self.minimum if self.exclusive else v < self.minimum):
            return False
        return True

    def describe(self) -> str:
        names = {"string": "a string", "integer": "a whole number", "number": "a finite number", "boolean": "true or false",
                 "object": "an object", "array": "a list"}
        text = names[self.kind]
        if self.minimum is not None:
            text += f" {'>' if self.exclusive else '>='} {self.minimum:g}"
        if self.length is not None:
            text = f"a list of {self.length}" + (f" ({self.items.describe()})" if self.items else "")
        elif self.items is not None:
            text += f" of {self.items.describe()}"
        if self.contains:
            text += f" containing {self.contains}"
        if self.path:
            text = "a relative path inside the bundle"
        if self.hex64:
            text = "64 hex digits"
        return text + (" or null" if self.nullable else "")

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": [self.kind, "null"] if self.nullable else self.kind}
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive else "minimum"] = self.minimum
        if self.length is not None:
            out["minItems"] = out["maxItems"] = self.length
        if self.items is not None:
            out["items"] = self.items.schema()
        if self.contains is not None:
            out["pattern"] = "\\{question\\}" if self.contains == "{question}" else self.contains
        if self.path:
            out["pattern"] = RELATIVE_PATH_PATTERN
        if self.hex64:
            out["pattern"] = "^[0-9a-f]{64}$"
        return out


STRING = Field("string")
BOOLEAN = Field("boolean")
OBJECT = Field("object")
ARRAY = Field("array")
PATH = Field("string", path=True)
SHA256 = Field("string", hex64=True)


def integer(minimum: int | None = None) -> Field:
    return Field("integer", minimum=minimum)


def positive() -> Field:
    return Field("number", minimum=0, exclusive=True)


def _table() -> dict[str, dict[str, Field]]:
    from . import contract
    from .contract import (
        BackboneKey,
        FileKey,
        InputSpecKey,
        Key,
        MaskInputKey,
        MemoryBoundKey,
        MethodKey,
        ModelKey,
        OptimizerKey,
        PhaseKey,
        ScheduleKey,
        SlotKey,
        TokenIdKey,
        TrainableKey,
    )

    rgb = Field("array", length=3, items=Field("number"))
    sizes = Field("array", items=integer(0))
    return {
        "": {Key.SCHEMA: STRING, Key.SCHEMA_VERSION: integer(), Key.FORMAT: STRING, Key.SDK_VERSION: STRING,
             Key.MODEL: OBJECT, Key.INPUT_SPEC: OBJECT, Key.METHODS: OBJECT, Key.TRAINABLE: ARRAY,
             Key.RANK_SCHEDULE: OBJECT, Key.PERFORMANCE_MODEL: Field("object", nullable=True), Key.OPTIMIZER: OBJECT,
             Key.BACKBONE: OBJECT, Key.FILES: ARRAY, Key.MEMORY_BOUND: OBJECT},
        Key.MODEL: {ModelKey.NAME: STRING, ModelKey.QUANT: STRING, ModelKey.PARAMETERS: integer(0),
                    ModelKey.NUM_IMAGE_TOKENS: integer(0), ModelKey.VOCAB_SIZE: integer(1)},
        Key.INPUT_SPEC: {
            InputSpecKey.IMAGE_SIZE: integer(1), InputSpecKey.IMAGE_MEAN: rgb,
            InputSpecKey.IMAGE_STD: Field("array", length=3, items=positive()),
            InputSpecKey.PROMPT_TEMPLATE: Field("string", contains="{question}"), InputSpecKey.MAX_TEXT_LEN: integer(3),
            InputSpecKey.LOWERCASE: BOOLEAN, InputSpecKey.SEQUENCE_LENGTH: integer(1), InputSpecKey.BATCH_SIZE: integer(1),
            InputSpecKey.TOKEN_IDS: OBJECT, InputSpecKey.TOKENIZER_FILE: PATH, InputSpecKey.PAD_TOKEN: STRING,
            InputSpecKey.BOS_TOKEN: STRING, InputSpecKey.EOS_TOKEN: STRING,
        },
        f"{Key.INPUT_SPEC}.{InputSpecKey.TOKEN_IDS}": {TokenIdKey.PAD: integer(0), TokenIdKey.BOS: integer(0),
                                                      TokenIdKey.EOS: integer(0), TokenIdKey.IGNORE_INDEX: integer()},
        Key.OPTIMIZER: {OptimizerKey.NAME: STRING, OptimizerKey.LR: positive()},
        Key.BACKBONE: {BackboneKey.QUANT: STRING, BackboneKey.BYTES_BY_DTYPE: OBJECT, BackboneKey.TOTAL_BYTES: integer(0)},
        Key.MEMORY_BOUND: {**{k: integer(0) for k in contract.MEMORY_BOUND_KEYS}, MemoryBoundKey.BATCH_SIZE: integer(1),
                           MemoryBoundKey.COUNTED_BY: STRING},
        Key.TRAINABLE: {**{k: STRING for k in contract.TRAINABLE_KEYS}, TrainableKey.SHAPE: sizes},
        Key.FILES: {FileKey.PATH: PATH, FileKey.SHA256: SHA256, FileKey.SIZE: integer(0)},
        Key.METHODS: {**{k: PATH for k in (MethodKey.PROGRAM, MethodKey.TRAINABLE_DATA, MethodKey.TRAINING_MODEL,
                                           MethodKey.EVAL_MODEL, MethodKey.OPTIMIZER_MODEL, MethodKey.CHECKPOINT)},
                      MethodKey.TRAIN: OBJECT, MethodKey.EVAL: OBJECT, MethodKey.TRAIN_INPUTS: ARRAY,
                      MethodKey.OUTPUTS: ARRAY, MethodKey.BACKBONE: OBJECT, MethodKey.HEAD: OBJECT},
        "pte_method": {MethodKey.METHOD: STRING, MethodKey.INPUTS: ARRAY, MethodKey.OUTPUTS: ARRAY,
                       MethodKey.GRADIENTS_INDEX_METHOD: STRING, MethodKey.PARAMETERS_INDEX_METHOD: STRING,
                       MethodKey.FQN_METHOD: STRING},
        "schedule": {ScheduleKey.ALLOCATOR: STRING, ScheduleKey.ADAPTER: STRING, ScheduleKey.BUDGET_PARAMS: integer(0),
                     ScheduleKey.DROPOUT: Field("number", minimum=0)},
        "slot": {SlotKey.R_MAX: integer(0), SlotKey.PARAMS_PER_RANK: integer(0), SlotKey.SCALE: Field("number")},
        "phase": {PhaseKey.START_STEP: integer(0), PhaseKey.RANKS: OBJECT, PhaseKey.MASKS: OBJECT},
        "mask_input": {MaskInputKey.MODULE: STRING, MaskInputKey.SLOT: STRING, MaskInputKey.R_MAX: integer(0),
                       MaskInputKey.INPUT: STRING},
    }


FIELD_TYPES: dict[str, dict[str, Field]] = _table()
