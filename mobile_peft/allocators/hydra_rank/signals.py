"""Gradient signals for HyDRA: per rank slot, the RMS gradient of its active rank columns.

For a slot with down ``D [r_max, fan_in]``, up ``U [out, r_max]`` and active columns ``a``,
one step's signal is ``sum(g_D[a]^2) + sum(g_U[:, a]^2)`` divided by ``|a|`` (squared gradient
per rank: a diagonal-Fisher estimate of what one more rank of this slot is worth). The collector
keeps an exponential moving average over steps and reports its square root.
"""

from __future__ import annotations

import torch
from torch import nn

from ...adapters.base import adapter_layers
from .._modules import unit_key

__all__ = ["SignalCollector"]


class SignalCollector:
    """Trainer callback: reads the adapters' gradients after every step (they are still set when
    ``on_step_end`` runs) into an EMA of squared gradient per active rank."""

    def __init__(self, decay: float = 0.8) -> None:
        self.decay = decay
        self.sq: dict[str, float] = {}
        self.steps = 0

    @torch.no_grad()
    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        for path, layer in adapter_layers(model).items():
            for name, slot in layer.rank_slots().items():
                active = slot.rank_mask != 0
                n = int(active.sum())
                if slot.r_max == 0 or n == 0:
                    continue
                g_down, g_up = getattr(layer, slot.down).grad, getattr(layer, slot.up).grad
                if g_down is None or g_up is None:
                    continue
                value = float(g_down[active].pow(2).sum() + g_up[:, active].pow(2).sum()) / n
                key = unit_key(path, name)
                old = self.sq.get(key)
                self.sq[key] = value if old is None else self.decay * old + (1 - self.decay) * value
        self.steps += 1

    def signals(self) -> dict[str, float]:
        """unit -> RMS gradient per active rank (units never seen are absent)."""
        return {k: v**0.5 for k, v in self.sq.items()}
