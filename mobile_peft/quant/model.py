"""Quantise every frozen linear layer of a model in place, and count backbone bytes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from .qlinear import DEFAULT_INT4_GROUP, QuantLinear, check_quant_mode

logger = logging.getLogger(__name__)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def quantize_model(model: nn.Module, mode: str, group_size: int = DEFAULT_INT4_GROUP) -> int:
    """Replace each plain ``nn.Linear`` of ``model`` by a :class:`QuantLinear` (``mode`` int8 or
    int4); ``mode='none'`` leaves the model as it is. Adapter layers are not touched: they wrap
    their base layer, which is replaced like any other linear. Returns the number of layers
    quantised.
    """
    check_quant_mode(mode)
    if mode == "none":
        return 0
    targets = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear  # adapter weights are bare Parameters, never nn.Linear
    ]
    for name in targets:
        _set_submodule(model, name, QuantLinear.from_linear(model.get_submodule(name), mode, group_size))  # type: ignore[arg-type]
    logger.info("quantised %d linear layers to %s", len(targets), mode)
    return len(targets)


@dataclass(frozen=True)
class BackboneBytes:
    """Bytes of the frozen backbone. ``linear`` counts linear weights only (values + scales);
    ``total`` adds every other frozen parameter and buffer (embeddings, norms, biases, convs)."""

    linear: int
    total: int

    def as_dict(self) -> dict[str, int]:
        return {"linear_weight_bytes": self.linear, "total_bytes": self.total}


def backbone_bytes(model: nn.Module, exclude: set[int] | None = None) -> BackboneBytes:
    """Count the bytes of ``model``'s frozen weights; tensors whose ``id`` is in ``exclude``
    (the adapter tensors) and non-persistent buffers are not counted."""
    exclude = exclude or set()
    linear = 0
    counted: set[int] = set()
    for module in model.modules():
        if isinstance(module, QuantLinear):
            linear += module.storage_bytes()
            counted.update({id(module.qweight), id(module.scales)})
        elif type(module) is nn.Linear and id(module.weight) not in exclude:
            linear += module.weight.numel() * module.weight.element_size()
            counted.add(id(module.weight))
    total = 0
    seen: set[int] = set()
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in exclude or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return BackboneBytes(linear=linear, total=total)
