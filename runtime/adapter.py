"""The personal adapter: the runtime's trained tensors written in the authoring layer's file
format (``adapter_config.json`` + ``adapter_model.safetensors``, as ``mobile_peft.adapters.io``),
so ``load_adapter`` reads it and, for LoRA, Hugging Face PEFT does too. Written here with json
and ``safetensors.numpy``: the runtime does not import the authoring layer.

What is written is the *effective* adapter at the final masks, exactly as ``save_adapter`` does:
only active ranks, each up-projection column multiplied by its mask value, ``r`` = active ranks and
``alpha = scale * r`` so ``alpha / r`` keeps the branch scale; per-module ranks/alphas that differ
from the most common one go into exact-path ``rank_pattern`` / ``alpha_pattern`` entries; modules
with no active rank are left out. Keys are ``base_model.model.<path>.<param>.weight``, paths
relative to ``root`` (``language_model`` when every LoRA module lives there, so PEFT loads the
file into the Hugging Face language model alone).

:func:`read_adapter` goes the other way (any such file -> full ``[r_max]`` tensors + masks for the
bundle's graph), so ``mobile-peft eval --adapter`` scores exactly what was exported.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.errors import CheckpointError, ConfigError

from .bundle import Bundle, Schedule, Trainable

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "read_adapter", "write_adapter"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 1
_KEY_PREFIX = "base_model.model."
_METADATA_KEY = "mobile_peft"
_LM_ROOT = "language_model"
# PEFT LoraConfig fields the authoring layer pins (mobile_peft/adapters/lora/config.py).
_LORA_FIXED = {
    "use_dora": False, "use_rslora": False, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
    "layers_to_transform": None, "target_parameters": None, "lora_bias": False,
}
_PEFT_TYPES = {"lora": "LORA", "hydra": "HYDRA"}


def _roles(trainable: list[Trainable]) -> dict[tuple[str, str], dict[str, Trainable]]:
    """(module, slot) -> {"down": tensor, "up": tensor}; the down-projection is ``[r_max, fan_in]``
    (``lora_A`` / ``*_down``), the up-projection ``[out, r_max]`` (``lora_B`` / ``*_up``)."""
    out: dict[tuple[str, str], dict[str, Trainable]] = {}
    for t in trainable:
        role = "down" if t.param.endswith(("_A", "_down")) else "up" if t.param.endswith(("_B", "_up")) else None
        if role is None:
            raise ConfigError(f"trainable tensor {t.name!r} is neither a down (lora_A/*_down) nor an up (lora_B/*_up) projection.")
        out.setdefault((t.module, t.slot), {})[role] = t
    return out


def _most_common(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0]


def _root(modules: list[str], adapter: str) -> str:
    if adapter == "lora" and modules and all(m.startswith(_LM_ROOT + ".") for m in modules):
        return _LM_ROOT
    return ""


def _lora_config(effective: dict[str, dict[str, tuple[int, float | None]]], dropout: float) -> dict[str, Any]:
    pairs = {p: s["lora"] for p, s in effective.items()}
    r, alpha = _most_common(list(pairs.values()))
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": None, "inference_mode": True,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": list(pairs), "exclude_modules": None,
        "rank_pattern": {re.escape(p): pr for p, (pr, _) in pairs.items() if pr != r},
        "alpha_pattern": {re.escape(p): pa for p, (_, pa) in pairs.items() if pa != alpha},
        "init_lora_weights": True, **_LORA_FIXED,
    }


def _hydra_config(effective: dict[str, dict[str, tuple[int, float | None]]], dropout: float) -> dict[str, Any]:
    ranks = {p: (s["parallel"][0], s["sequential"][0]) for p, s in effective.items()}
    rp, rs = _most_common(list(ranks.values()))
    alpha = _most_common([a for s in effective.values() for _, a in s.values() if a is not None])
    rank_pattern, alpha_pattern = {}, {}
    for path, slots in effective.items():
        if ranks[path] != (rp, rs):
            rank_pattern[re.escape(path)] = {"parallel": ranks[path][0], "sequential": ranks[path][1]}
        differ = {b: a for b, (_, a) in slots.items() if a is not None and a != alpha}
        if differ:
            alpha_pattern[re.escape(path)] = differ
    return {
        "peft_type": "HYDRA", "r_parallel": rp, "r_sequential": rs, "alpha": alpha, "target_modules": list(effective),
        "exclude_modules": None, "dropout": dropout, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "init": "default", "task_type": None,
    }


def write_adapter(bundle: Bundle, params: dict[str, np.ndarray], masks: list[np.ndarray], out_dir: str | Path) -> Path:
    """Write the effective adapter of ``params`` at ``masks`` (graph-input order) to ``out_dir``."""
    from safetensors.numpy import save_file

    schedule = bundle.schedule
    adapter = schedule.adapter
    if adapter not in _PEFT_TYPES:
        raise ConfigError(f"adapter method {adapter!r} has no file format here; expected one of {sorted(_PEFT_TYPES)}.")
    mask_of = dict(zip(schedule.mask_order, masks))
    roles = _roles(bundle.trainable)
    modules = list(dict.fromkeys(t.module for t in bundle.trainable))
    root = _root(modules, adapter)
    effective: dict[str, dict[str, tuple[int, float | None]]] = {}
    tensors: dict[str, np.ndarray] = {}
    for module in modules:
        rel = module[len(root) + 1 :] if root else module
        slots = [s for (m, s) in roles if m == module]
        entry, module_tensors = {}, {}
        for slot in slots:
            down, up = roles[(module, slot)]["down"], roles[(module, slot)]["up"]
            mask = mask_of[(module, slot)]
            active = np.flatnonzero(mask)
            module_tensors[down.param] = np.ascontiguousarray(params[down.name][active], dtype=np.float32)
            module_tensors[up.param] = np.ascontiguousarray(params[up.name][:, active] * mask[active], dtype=np.float32)
            entry[slot] = (int(active.size), schedule.scale(module, slot) * active.size if active.size else None)
        if not any(r for r, _ in entry.values()):
            continue  # every rank masked off: nothing to save (as save_adapter)
        effective[rel] = entry
        tensors.update({f"{_KEY_PREFIX}{rel}.{p}.weight": t for p, t in module_tensors.items()})
    if not effective:
        raise ConfigError("every adapter module has all its ranks masked off; there is nothing to export.")
    dropout = float(schedule.extra.get("dropout", 0.0))
    config = _lora_config(effective, dropout) if adapter == "lora" else _hydra_config(effective, dropout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ADAPTER_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    metadata = {"method": adapter, "root": root, "mobile_peft_version": bundle.manifest.get("sdk_version", "unknown"),
                "format_version": FORMAT_VERSION}
    save_file(tensors, str(out / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt", _METADATA_KEY: json.dumps(metadata)})
    return out


def _scale_of(config: dict[str, Any], adapter: str, path: str, slot: str, rank: int) -> float:
    """``alpha / r`` the file gives ``path``'s ``slot`` (patterns are exact-path regexes or suffixes)."""
    if adapter == "lora":
        alpha = config.get("lora_alpha", 8)
        for key, value in (config.get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?{key}", path):
                alpha = value
    else:
        alpha = config.get("alpha", 16)
        for key, value in (config.get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?{key}", path):
                alpha = value.get(slot, alpha) if isinstance(value, dict) else value
    return float(alpha) / rank


def read_adapter(bundle: Bundle, directory: str | Path) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Full ``[r_max]``-shaped tensors (manifest names) and masks (graph-input order) that make the
    bundle's graph compute exactly the adapter saved in ``directory``: the file's ``r`` ranks go
    first with mask 1, the rest are zero and masked off; a different ``alpha / r`` than the
    bundle's scale is folded into the up-projection."""
    from safetensors import safe_open

    directory = Path(directory)
    files = [directory / ADAPTER_CONFIG_NAME, directory / ADAPTER_WEIGHTS_NAME]
    if not all(f.is_file() for f in files):
        raise CheckpointError(f"{directory} has no {ADAPTER_CONFIG_NAME} + {ADAPTER_WEIGHTS_NAME}; pass a run directory of `mobile-peft train`.")
    config = json.loads(files[0].read_text())
    with safe_open(str(files[1]), framework="numpy") as handle:
        header = handle.metadata() or {}
        stored = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    root = json.loads(header.get(_METADATA_KEY, "{}")).get("root", "")
    schedule: Schedule = bundle.schedule
    adapter = schedule.adapter
    params = {t.name: np.zeros(t.shape, dtype=np.float32) for t in bundle.trainable}
    ranks: dict[str, dict[str, int]] = {m: dict.fromkeys(slots, 0) for m, slots in schedule.modules.items()}
    used = set()
    for (module, slot), pair in _roles(bundle.trainable).items():
        rel = module[len(root) + 1 :] if root and module.startswith(root + ".") else module
        down_key, up_key = (f"{_KEY_PREFIX}{rel}.{pair[r].param}.weight" for r in ("down", "up"))
        if down_key not in stored:
            continue  # not in the file: this module's slot stays off
        down, up = stored[down_key], stored[up_key]
        used |= {down_key, up_key}
        r, r_max = down.shape[0], pair["down"].shape[0]
        if r > r_max:
            raise ConfigError(f"{rel}.{slot} has rank {r} in {directory}, above the bundle's r_max {r_max}.")
        if r:
            factor = _scale_of(config, adapter, rel, slot, r) / schedule.scale(module, slot)
            params[pair["down"].name][:r] = down
            params[pair["up"].name][:, :r] = up * np.float32(factor)
        ranks[module][slot] = r
    unknown = set(stored) - used
    if unknown:
        raise ConfigError(f"{directory} has tensors for modules the bundle does not adapt, e.g. {sorted(unknown)[:3]}.")
    return params, schedule.masks(ranks)
