"""The personal adapter of a run: the runtime's trained tensors as ``adapter_config.json`` +
``adapter_model.safetensors``, written by the core's writer
(:mod:`mobile_peft.core.adapter_files`, the one ``save_adapter`` uses), so ``load_adapter`` reads
it and, for LoRA, Hugging Face PEFT does too.

What is written is the *effective* adapter at the final masks, exactly as ``save_adapter`` does:
only active ranks, each up-projection column multiplied by its mask value, ``r`` = active ranks and
``alpha = scale * r``; modules with no active rank are left out. Paths are relative to ``root``
(``language_model`` when every LoRA module lives there, so PEFT loads the file into the Hugging
Face language model alone). Which tensor is ``down`` and which ``up`` comes from the manifest's
recorded roles.

:func:`read_adapter` goes the other way (any such file -> full ``[r_max]`` tensors + masks for the
bundle's graph), so ``mobile-peft eval --adapter`` scores exactly what was exported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobile_peft.core import adapter_files as files
from mobile_peft.core.contract import ADAPTER_LORA, ROLE_DOWN, ROLE_UP
from mobile_peft.core.errors import ConfigError

from .bundle import Bundle

__all__ = ["read_adapter", "write_adapter"]

_LM_ROOT = "language_model"


def _root(modules: list[str], adapter: str) -> str:
    if adapter == ADAPTER_LORA and modules and all(m.startswith(_LM_ROOT + ".") for m in modules):
        return _LM_ROOT
    return ""


def write_adapter(
    bundle: Bundle, params: dict[str, np.ndarray], masks: list[np.ndarray], out_dir: str | Path
) -> Path:
    """Write the effective adapter of ``params`` at ``masks`` (graph-input order) to ``out_dir``."""
    schedule = bundle.schedule
    mask_of = {(e.module, e.slot): m for e, m in zip(schedule.mask_inputs, masks)}
    pairs = bundle.manifest.slot_pairs()
    modules = list(dict.fromkeys(t.module for t in bundle.trainable))
    root = _root(modules, schedule.adapter)
    effective: files.ModuleRanks = {}
    tensors: dict[str, np.ndarray] = {}
    for module in modules:
        rel = module[len(root) + 1 :] if root else module
        entry, module_tensors = {}, {}
        for (m, slot), pair in pairs.items():
            if m != module:
                continue
            down, up, mask = pair[ROLE_DOWN], pair[ROLE_UP], mask_of[(module, slot)]
            active = np.flatnonzero(mask)
            module_tensors[down.param] = np.ascontiguousarray(params[down.name][active], dtype=np.float32)
            module_tensors[up.param] = np.ascontiguousarray(
                params[up.name][:, active] * mask[active], dtype=np.float32
            )
            entry[slot] = (
                int(active.size),
                schedule.scale(module, slot) * active.size if active.size else None,
            )
        if not any(r for r, _ in entry.values()):
            continue  # every rank masked off: nothing to save (as save_adapter)
        effective[rel] = entry
        tensors.update({files.tensor_key(rel, p): t for p, t in module_tensors.items()})
    if not effective:
        raise ConfigError("every adapter module has all its ranks masked off; there is nothing to export.")
    config = files.effective_config(schedule.adapter, effective, schedule.dropout)
    metadata = files.adapter_metadata(schedule.adapter, root, bundle.manifest.sdk_version)
    return files.write_adapter_files(out_dir, config, tensors, metadata)


def read_adapter(bundle: Bundle, directory: str | Path) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Full ``[r_max]``-shaped tensors (manifest names) and masks (graph-input order) that make the
    bundle's graph compute exactly the adapter saved in ``directory``: the file's ``r`` ranks go
    first with mask 1, the rest are zero and masked off; a different ``alpha / r`` than the
    bundle's scale is folded into the up-projection."""
    config, stored, metadata = files.read_adapter_files(directory)
    root = metadata.get("root", "")
    schedule = bundle.schedule
    params = {t.name: np.zeros(t.shape, dtype=np.float32) for t in bundle.trainable}
    ranks: dict[str, dict[str, int]] = {m: dict.fromkeys(slots, 0) for m, slots in schedule.modules.items()}
    used = set()
    for (module, slot), pair in bundle.manifest.slot_pairs().items():
        rel = module[len(root) + 1 :] if root and module.startswith(root + ".") else module
        down_key, up_key = (files.tensor_key(rel, pair[r].param) for r in (ROLE_DOWN, ROLE_UP))
        if down_key not in stored:
            continue  # not in the file: this module's slot stays off
        down, up = stored[down_key], stored[up_key]
        used |= {down_key, up_key}
        r, r_max = down.shape[0], pair[ROLE_DOWN].shape[0]
        if r > r_max:
            raise ConfigError(f"{rel}.{slot} has rank {r} in {directory}, above the bundle's r_max {r_max}.")
        if r:
            factor = files.slot_scale(config, rel, slot, r) / schedule.scale(module, slot)
            params[pair[ROLE_DOWN].name][:r] = down
            params[pair[ROLE_UP].name][:, :r] = up * np.float32(factor)
        ranks[module][slot] = r
    unknown = set(stored) - used
    if unknown:
        raise ConfigError(
            f"{directory} has tensors for modules the bundle does not adapt, e.g. {sorted(unknown)[:3]}."
        )
    return params, schedule.input_masks(ranks)
