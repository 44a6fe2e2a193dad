"""The personal adapter on disk: ``adapter_config.json`` + ``adapter_model.safetensors``.

One writer for the authoring layer's ``save_adapter`` and the phone-side runtime. LoRA files are
Hugging Face PEFT files (``PeftModel.from_pretrained(base, directory)`` loads them); Hydra files use
the same layout with ``peft_type: "HYDRA"`` and keys ``parallel_down`` / ``parallel_up`` /
``sequential_down`` / ``sequential_up`` (this SDK's own format, which PEFT cannot load).

Tensor keys are ``base_model.model.<module path>.<param>.weight``. What is written is the
*effective* adapter (:func:`effective_config`): only active ranks, ``r`` = active ranks and
``alpha`` rescaled so that ``alpha / r`` keeps the branch scale, per module through exact-path
``rank_pattern`` / ``alpha_pattern`` entries when a module differs from the most common one.

mobile-peft's metadata (``method``, ``root``, ``mobile_peft_version``, ``format_version``) is a
JSON string under the ``mobile_peft`` key of the safetensors header (PEFT 0.21 drops unknown
``adapter_config.json`` keys with a misleading "upgrade PEFT" warning, and ignores header
metadata). Reading uses safetensors only (no pickle).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .contract import ADAPTER_HYDRA, ADAPTER_LORA, PEFT_TYPES
from .errors import CheckpointError, ConfigError

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "FORMAT_VERSION",
    "LORA_FIXED",
    "ModuleRanks",
    "effective_config",
    "exact_pattern",
    "hydra_config_json",
    "lora_config_json",
    "most_common",
    "read_adapter_files",
    "resolve_pattern",
    "safetensors_bytes",
    "tensor_key",
    "write_adapter_files",
]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 1
KEY_PREFIX = "base_model.model."  # PEFT's prefix in front of the base model's module paths
METADATA_KEY = "mobile_peft"
# PEFT LoraConfig fields this SDK's LoRA cannot honour, with the value that is fine.
LORA_FIXED: dict[str, Any] = {
    "use_dora": False,
    "use_rslora": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "layers_to_transform": None,
    "target_parameters": None,
    "lora_bias": False,
}

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
# Per-module ranks and alphas of an effective adapter: path -> slot -> (rank, alpha | None).
ModuleRanks = dict[str, dict[str, tuple[int, float | None]]]


def tensor_key(path: str, param: str) -> str:
    return f"{KEY_PREFIX}{path}.{param}.weight"


def most_common(values: list[K]) -> K:
    """The most frequent value; ties go to the first seen (deterministic file contents)."""
    return Counter(values).most_common(1)[0][0]


def exact_pattern(path: str) -> str:
    """A pattern key that matches exactly the module ``path`` under PEFT's pattern rules."""
    return re.escape(path)


def resolve_pattern(key: str, pattern: Mapping[str, V], default: V) -> V:
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: the value of the first key ``p`` with
    ``re.match(rf"(.*\\.)?({p})$", key)``, else ``default``."""
    for p, value in pattern.items():
        if re.match(rf"(.*\.)?({p})$", key):
            return value
    return default


# -- adapter_config.json ---------------------------------------------------------------------------
def lora_config_json(
    r: int,
    alpha: float,
    target_modules: Any,
    exclude_modules: Any = None,
    dropout: float = 0.0,
    rank_pattern: Mapping[str, Any] | None = None,
    alpha_pattern: Mapping[str, Any] | None = None,
    task_type: str | None = None,
) -> dict[str, Any]:
    """A PEFT LoRA ``adapter_config.json`` (loadable by ``peft.LoraConfig``)."""
    return {
        "peft_type": PEFT_TYPES[ADAPTER_LORA],
        "task_type": task_type,
        "base_model_name_or_path": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": target_modules,
        "exclude_modules": exclude_modules,
        "rank_pattern": dict(rank_pattern or {}),
        "alpha_pattern": dict(alpha_pattern or {}),
        "init_lora_weights": True,
        **LORA_FIXED,
    }


def hydra_config_json(
    r_parallel: int,
    r_sequential: int,
    alpha: float,
    target_modules: Any,
    exclude_modules: Any = None,
    dropout: float = 0.0,
    rank_pattern: Mapping[str, Any] | None = None,
    alpha_pattern: Mapping[str, Any] | None = None,
    init: str = "default",
    task_type: str | None = None,
) -> dict[str, Any]:
    """A Hydra ``adapter_config.json`` (this SDK's format)."""
    return {
        "peft_type": PEFT_TYPES[ADAPTER_HYDRA],
        "task_type": task_type,
        "r_parallel": r_parallel,
        "r_sequential": r_sequential,
        "alpha": alpha,
        "target_modules": target_modules,
        "exclude_modules": exclude_modules,
        "dropout": dropout,
        "rank_pattern": dict(rank_pattern or {}),
        "alpha_pattern": dict(alpha_pattern or {}),
        "init": init,
    }


def effective_config(
    method: str, modules: ModuleRanks, dropout: float, task_type: str | None = None
) -> dict[str, Any]:
    """The config that rebuilds exactly ``modules`` (path -> slot -> (r, alpha | None)): the most
    common rank (pair) and alpha are the defaults, modules that differ get exact-path entries
    (a slot of rank 0 has no meaningful alpha and keeps the default)."""
    if method == ADAPTER_LORA:
        pairs = {path: slots["lora"] for path, slots in modules.items()}
        r, alpha = most_common(list(pairs.values()))
        return lora_config_json(
            r,
            alpha,
            list(pairs),
            dropout=dropout,
            task_type=task_type,
            rank_pattern={exact_pattern(p): pr for p, (pr, _) in pairs.items() if pr != r},
            alpha_pattern={exact_pattern(p): pa for p, (_, pa) in pairs.items() if pa != alpha},
        )
    if method == ADAPTER_HYDRA:
        ranks = {p: (s["parallel"][0], s["sequential"][0]) for p, s in modules.items()}
        rp, rs = most_common(list(ranks.values()))
        alpha = most_common([a for s in modules.values() for _, a in s.values() if a is not None])
        rank_pattern: dict[str, Any] = {}
        alpha_pattern: dict[str, Any] = {}
        for path, slots in modules.items():
            if ranks[path] != (rp, rs):
                rank_pattern[exact_pattern(path)] = {"parallel": ranks[path][0], "sequential": ranks[path][1]}
            differ = {b: a for b, (_, a) in slots.items() if a is not None and a != alpha}
            if differ:
                alpha_pattern[exact_pattern(path)] = differ
        return hydra_config_json(
            rp,
            rs,
            alpha,
            list(modules),
            dropout=dropout,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            task_type=task_type,
        )
    raise ConfigError(f"adapter method {method!r} has no file format; expected one of {sorted(PEFT_TYPES)}.")


def slot_scale(config: Mapping[str, Any], path: str, slot: str, rank: int) -> float:
    """``alpha / r`` that an ``adapter_config.json`` gives ``path``'s ``slot`` at rank ``rank``
    (:class:`ConfigError` when the file's alpha or patterns are unusable: it is untrusted input)."""
    try:
        patterns = config.get("alpha_pattern") or {}
        if config.get("peft_type") == PEFT_TYPES[ADAPTER_LORA]:
            alpha = resolve_pattern(path, patterns, config.get("lora_alpha", 8))
        else:
            value = resolve_pattern(path, patterns, None)
            alpha = config.get("alpha", 16)
            if value is not None:
                alpha = value.get(slot, alpha) if isinstance(value, dict) else value
        alpha = float(alpha)
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError, re.error) as exc:
        raise ConfigError(f"adapter_config.json gives {path}.{slot} an unusable alpha or alpha_pattern ({exc}).") from None
    if not (alpha == alpha and 0 < abs(alpha) < float("inf")) or rank <= 0:
        raise ConfigError(f"adapter_config.json gives {path}.{slot} alpha {alpha!r} at rank {rank}; expected a finite non-zero alpha.")
    return alpha / rank


# -- files -----------------------------------------------------------------------------------------
_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
           "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def safetensors_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file, byte-for-byte deterministic: tensors in key order, the header JSON
    compact with sorted metadata first, padded with spaces to a multiple of 8 bytes (the format's
    rule). The reference library orders header metadata by hash, so the same tensors could give
    different bytes; a phone writes exactly these bytes."""
    header: dict[str, Any] = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    blobs, offset = [], 0
    for key in sorted(tensors):
        array = np.ascontiguousarray(tensors[key])
        if array.dtype.name not in _DTYPES:
            raise ConfigError(f"tensor {key!r} has dtype {array.dtype}, which the adapter file cannot hold; expected one of {sorted(_DTYPES)}.")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {"dtype": _DTYPES[array.dtype.name], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write_adapter_files(
    directory: str | Path,
    config: dict[str, Any],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any],
) -> Path:
    """Write ``adapter_config.json`` (sorted keys) and ``adapter_model.safetensors`` (``tensors``
    by key, ``metadata`` as JSON under the ``mobile_peft`` header key) into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot save an adapter to {directory}: it exists and is not a directory.")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ADAPTER_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    header = {"format": "pt", METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)}
    (directory / ADAPTER_WEIGHTS_NAME).write_bytes(safetensors_bytes(tensors, header))
    return directory


def adapter_metadata(method: str, root: str, sdk_version: str) -> dict[str, Any]:
    return {
        "method": method,
        "root": root,
        "mobile_peft_version": sdk_version,
        "format_version": FORMAT_VERSION,
    }


def read_adapter_files(
    directory: str | Path, framework: str = "numpy"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(config, tensors, metadata)`` of an adapter directory; tensors are numpy arrays
    (``framework="numpy"``) or torch tensors (``"pt"``, which keeps bfloat16). Raises
    :class:`CheckpointError` naming what is missing or damaged."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"adapter directory {directory} does not exist or is not a directory.")
    missing = [n for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME) if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(
            f"adapter directory {directory} lacks {', '.join(missing)}; expected {ADAPTER_CONFIG_NAME} "
            f"and {ADAPTER_WEIGHTS_NAME} (as written by save_adapter, `mobile-peft train` or PEFT's save_pretrained)."
        )
    try:
        config = json.loads((directory / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG_NAME} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise CheckpointError(
            f"{directory / ADAPTER_CONFIG_NAME} has no 'peft_type'; it is not an adapter config."
        )
    from safetensors import safe_open

    try:
        with safe_open(str(directory / ADAPTER_WEIGHTS_NAME), framework=framework) as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        ours = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{directory / ADAPTER_WEIGHTS_NAME} is not a readable safetensors file: {exc}"
        ) from None
    return config, tensors, ours
