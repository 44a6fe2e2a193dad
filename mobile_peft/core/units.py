"""Allocation units and where an adapted module sits in the VLM (tower, layer, module type).

An *allocation unit* is one rank slot of one adapted module, keyed ``"<module path>::<slot>"``
(:func:`unit_key`). The allocators, the performance model, the manifest's rank schedule and the
phone's re-allocation all name units this way; this module is the only place that spells it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["UNIT_SEPARATOR", "ModulePlace", "module_place", "split_unit", "unit_key"]

UNIT_SEPARATOR = "::"
_LAYER = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")
_MLP_NAMES = ("mlp", "fc1", "fc2", "gate_proj", "up_proj", "down_proj")


class ModulePlace(NamedTuple):
    tower: str  # "vision" | "projector" | "language" | "other"
    layer: int  # index inside the tower (0 for the projector)
    kind: str  # module type: the path after the layer index, e.g. "self_attn.q_proj"
    block: str  # "attn" | "mlp" | "proj"


def module_place(path: str) -> ModulePlace:
    """Parse a module path such as ``language_model.model.layers.3.mlp.up_proj``."""
    if path.startswith("vision_tower") or ".vision" in path:
        tower = "vision"
    elif "projector" in path:
        tower = "projector"
    elif path.startswith("language_model") or "language" in path:
        tower = "language"
    else:
        tower = "other"
    match = _LAYER.search(path)
    layer = int(match.group(1)) if match else 0
    kind = path[match.end() :] if match else path.rsplit(".", 1)[-1]
    if tower == "projector":
        block = "proj"
    else:
        block = "mlp" if any(name in kind for name in _MLP_NAMES) else "attn"
    return ModulePlace(tower, layer, kind, block)


def unit_key(module: str, slot: str) -> str:
    """One allocation unit: a rank slot of a module (``path::slot``)."""
    return f"{module}{UNIT_SEPARATOR}{slot}"


def split_unit(key: str) -> tuple[str, str]:
    """``(module, slot)`` of a unit key."""
    module, _, slot = key.rpartition(UNIT_SEPARATOR)
    return module, slot
