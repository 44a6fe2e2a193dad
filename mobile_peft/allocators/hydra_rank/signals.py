"""Trainer callback feeding HyDRA's gradient signals (:class:`mobile_peft.core.realloc.RankSignals`)
from the eager model's adapter gradients -- the same formula and EMA a phone applies to the
runtime's gradients (:func:`mobile_peft.core.realloc.rank_signal`)."""

from __future__ import annotations

import torch
from torch import nn

from ...adapters.base import adapter_layers
from ...core.realloc import RankSignals, rank_signal
from ...core.units import unit_key

__all__ = ["SignalCollector"]


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
