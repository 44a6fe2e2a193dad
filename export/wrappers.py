"""Wrapper modules that give the exporters fixed, flat signatures; the user's model is never edited.

Rank masks become graph inputs through :func:`torch.func.functional_call`: for one call the
wrapper swaps each adapter's ``<slot>_rank_mask`` buffer for the tensor passed in (and, for
:class:`EvalWrapper` with ``weights_as_inputs``, the adapter tensors too). Tracing records the
inputs, not the buffers, so a phone applies any phase of a rank schedule by feeding other masks.

Signatures (names and order in :mod:`.contract`)::

    TrainingWrapper(pixel_values [B,3,S,S] f32, input_ids [B,T] i64, labels [B,T] i64, *masks [r_max] f32)
        -> (loss [],)
    EvalWrapper(pixel_values, input_ids, labels, *masks[, *adapter_tensors]) -> (loss [], logits [B,T,V])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from mobile_peft.adapters import adapter_layers, adapter_parameters
from mobile_peft.core import contract
from mobile_peft.core.errors import ConfigError

__all__ = ["EvalWrapper", "MaskSlot", "TrainingWrapper", "mask_slots"]


@dataclass(frozen=True)
class MaskSlot:
    """One rank-mask graph input: the adapter module path, its slot, ``r_max`` and input name."""

    module: str
    slot: str
    r_max: int

    @property
    def input_name(self) -> str:
        return contract.mask_input_name(self.module, self.slot)


def mask_slots(model: nn.Module) -> list[MaskSlot]:
    """Every rank slot of ``model``'s adapters, in module order (the graph's mask input order)."""
    slots = [
        MaskSlot(path, name, slot.r_max)
        for path, layer in adapter_layers(model).items()
        for name, slot in layer.rank_slots().items()
    ]
    if not slots:
        raise ConfigError(
            "the model has no adapter layers; apply adapters before exporting a trainable bundle."
        )
    return slots


class _MaskedCall(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.slots = mask_slots(model)
        self.trainable_names = list(adapter_parameters(model))

    def example_masks(self) -> tuple[torch.Tensor, ...]:
        """The masks the model holds now (copies), in input order."""
        layers = adapter_layers(self.model)
        return tuple(
            getattr(layers[s.module], f"{s.slot}{contract.MASK_SUFFIX}").detach().clone() for s in self.slots
        )

    def _call(self, pixel_values, input_ids, labels, masks, weights=()):  # noqa: ANN001, ANN202
        if len(masks) != len(self.slots):
            raise ConfigError(f"expected {len(self.slots)} rank masks, got {len(masks)}.")
        swap = {s.input_name: m for s, m in zip(self.slots, masks)}
        swap.update(zip(self.trainable_names, weights))
        if not torch.jit.is_tracing():
            return functional_call(self.model, swap, (pixel_values, input_ids, labels))
        # The TorchScript tracer (the ONNX training exporter) refuses functional_call: swap the
        # mask buffers by hand for the duration of the call.
        layers = adapter_layers(self.model)
        saved = []
        try:
            for s, mask in zip(self.slots, masks):
                buffers = layers[s.module]._buffers
                name = f"{s.slot}{contract.MASK_SUFFIX}"
                saved.append((buffers, name, buffers[name]))
                buffers[name] = mask
            if weights:
                raise ConfigError("adapter tensors as inputs are only supported with torch.export.")
            return self.model(pixel_values, input_ids, labels)
        finally:
            for buffers, name, original in saved:
                buffers[name] = original


class TrainingWrapper(_MaskedCall):
    """``(pixel_values, input_ids, labels, *masks) -> (loss,)``; the loss is output 0, as the
    joint-graph exporters require."""

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor, *masks: torch.Tensor
    ):
        return (self._call(pixel_values, input_ids, labels, masks).loss,)


class EvalWrapper(_MaskedCall):
    """``(pixel_values, input_ids, labels, *masks[, *adapter_tensors]) -> (loss, logits)``.

    With ``weights_as_inputs`` the adapter tensors (in ``trainable_names`` order) are inputs too:
    the ``.pte`` eval method then scores the weights a phone is training, which live in the
    training method's planned memory and are not shared with other methods.
    """

    def __init__(self, model: nn.Module, weights_as_inputs: bool = False) -> None:
        super().__init__(model)
        self.weights_as_inputs = weights_as_inputs

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor, *rest: torch.Tensor
    ):
        n = len(self.slots)
        masks, weights = rest[:n], rest[n:] if self.weights_as_inputs else ()
        out = self._call(pixel_values, input_ids, labels, masks, weights)
        return out.loss, out.logits
