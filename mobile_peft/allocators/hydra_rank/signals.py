"""Trainer callback feeding HyDRA's gradient signals (:class:`mobile_peft.core.realloc.RankSignals`)
from the eager model's adapter gradients -- the same formula and EMA a phone applies to the
runtime's gradients (:func:`mobile_peft.core.realloc.rank_signal`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...adapters.base import adapter_layers
from ...core.realloc import RankSignals, gradient_spectrum, rank_signal
from ...core.units import unit_key

__all__ = ["SignalCollector", "gradient_spectra"]


class SignalCollector:
    """Reads the adapters' gradients after every step (they are still set when ``on_step_end``
    runs) into a :class:`RankSignals` (active ranks: non-zero mask entries)."""

    def __init__(self, decay: float = 0.8) -> None:
        self.tracker = RankSignals(decay)
        self.steps = 0

    @torch.no_grad()
    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        for path, layer in adapter_layers(model).items():
            for name, slot in layer.rank_slots().items():
                active = (slot.rank_mask != 0).numpy()
                if slot.r_max == 0 or not active.any():
                    continue
                g_down, g_up = getattr(layer, slot.down).grad, getattr(layer, slot.up).grad
                if g_down is None or g_up is None:
                    continue
                value = rank_signal(g_down.detach().float().numpy(), g_up.detach().float().numpy(), active)
                self.tracker.observe(unit_key(path, name), value)
        self.steps += 1

    def signals(self) -> dict[str, float]:
        """unit -> RMS gradient per active rank (units never seen are absent)."""
        return self.tracker.signals()


def gradient_spectra(
    model: nn.Module, dataset: Any, batches: int, batch_size: int, seed: int
) -> dict[str, list[float]]:
    """unit -> :func:`~mobile_peft.core.realloc.gradient_spectrum` of its up-projection gradient,
    summed over ``batches`` batches with every rank column open: the inactive columns' ``up`` is
    zeroed while open (so the loss is exactly the model's), then everything is put back; no
    parameter changes. A phone can do the same: the mask is a graph input."""
    from ...train.trainer import batches as batch_stream

    layers = adapter_layers(model)
    saved: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for path, layer in layers.items():
            for name, slot in layer.rank_slots().items():
                if slot.r_max == 0:
                    continue
                up = getattr(layer, slot.up)
                saved[(path, name)] = (slot.rank_mask.clone(), up.detach().clone())
                up[:, slot.rank_mask == 0] = 0.0
                slot.rank_mask.fill_(1.0)
    grads = {key: None for key in saved}
    was_training = model.training
    model.eval()  # no dropout: the sketch of the model as it is
    try:
        stream = batch_stream(dataset, batch_size, seed)
        for _ in range(batches):
            batch = next(stream)
            for key in saved:
                getattr(layers[key[0]], layers[key[0]].rank_slots()[key[1]].up).requires_grad_(True)
            model.zero_grad(set_to_none=True)
            model(batch["pixel_values"], batch["input_ids"], batch["labels"]).loss.backward()
            for path, name in saved:
                g = getattr(layers[path], layers[path].rank_slots()[name].up).grad
                if g is not None:
                    g = g.detach().double().clone()
                    grads[(path, name)] = g if grads[(path, name)] is None else grads[(path, name)] + g
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for (path, name), (mask, up) in saved.items():
                slot = layers[path].rank_slots()[name]
                slot.rank_mask.copy_(mask)
                getattr(layers[path], slot.up).copy_(up)
    return {
        unit_key(path, name): gradient_spectrum(g.numpy())
        for (path, name), g in grads.items()
        if g is not None
    }
