"""The adapter protocol: a frozen linear layer plus low-rank branches whose ranks are masked.

Every adapter method (LoRA, Hydra, ...) subclasses :class:`AdapterLayer`. The layer wraps a
frozen ``base_layer`` (``nn.Linear`` or :class:`~mobile_peft.quant.QuantLinear`) and owns one
or more **rank slots**. A slot is one low-rank branch ``up @ diag(mask) @ down``:

* ``down``: ``nn.Parameter [r_max, fan_in]``, ``up``: ``nn.Parameter [out_features, r_max]``;
* ``<slot>_rank_mask``: persistent fp32 buffer ``[r_max]``; 1.0 = rank active, 0.0 = off,
  fractional values give soft masks (ARD-LoRA). Rank schedules change this buffer only, so an
  exported graph takes the mask as an input and a new schedule needs no re-export;
* ``params_per_rank``: trainable numbers one rank unit costs (``fan_in + out_features``).

Adapter weights are bare ``nn.Parameter`` attributes, never ``nn.Linear`` submodules, so that
``quantize_model`` (which replaces every ``nn.Linear``) never touches them. Trainable tensors are
found through :meth:`AdapterLayer.adapter_params`, never by guessing parameter names.

Merging folds the branches into one plain ``nn.Linear`` that replaces ``base_layer``; the
original base layer is kept aside (outside the module tree, so it is neither in ``state_dict``
nor moved by ``.to()`` while merged) and :meth:`AdapterLayer.unmerge` puts the very same object
back, so unmerging is bit-exact (no float subtraction). Merging a ``QuantLinear`` base therefore
de-quantises that layer until it is unmerged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError
from ..quant import QuantLinear, is_linear, linear_weight

__all__ = [
    "AdapterLayer",
    "EffectiveAdapter",
    "RankSlot",
    "adapter_layers",
    "adapter_parameters",
    "mark_only_adapters_trainable",
]


@dataclass(frozen=True)
class RankSlot:
    """One low-rank branch of an adapter layer (a view built on demand; the mask is live).

    ``rank_mask`` is the layer's buffer itself (writing into it changes the layer); ``down`` and
    ``up`` name the ``[r_max, fan_in]`` and ``[out_features, r_max]`` parameters; ``scale`` is the
    branch's constant factor (``alpha / r_max``).
    """

    name: str
    r_max: int
    params_per_rank: int
    rank_mask: torch.Tensor
    down: str
    up: str
    scale: float

    @property
    def mask_buffer(self) -> str:
        return f"{self.name}_rank_mask"


@dataclass(frozen=True)
class EffectiveAdapter:
    """The active part of an adapter layer: only active rank rows/columns, mask values folded
    into the up-projection. ``alphas[slot]`` keeps ``alpha / r == scale`` unchanged (``None``
    for a slot with no active rank)."""

    tensors: dict[str, torch.Tensor]
    ranks: dict[str, int]
    alphas: dict[str, float | None]


def _adapter_dtype(base_layer: nn.Module) -> torch.dtype:
    if isinstance(base_layer, nn.Linear) and base_layer.weight.is_floating_point():
        return base_layer.weight.dtype
    return torch.float32  # QuantLinear dequantises to fp32


def _device(base_layer: nn.Module) -> torch.device:
    return base_layer.qweight.device if isinstance(base_layer, QuantLinear) else base_layer.weight.device


class AdapterLayer(nn.Module, ABC):
    """Base class of adapter layers; subclasses declare their slots and their forward.

    Subclasses call :meth:`_add_slot` for each branch and implement :meth:`forward` and
    :meth:`merged_weight_and_bias`, and set ``dropout_p`` (saved with the adapter).
    """

    dropout_p: float = 0.0

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        if not is_linear(base_layer):
            raise ConfigError(
                f"{type(self).__name__} wraps a linear layer (nn.Linear or QuantLinear); "
                f"got {type(base_layer).__name__}."
            )
        base_layer.requires_grad_(False)
        self.base_layer = base_layer
        self.in_features: int = base_layer.in_features
        self.out_features: int = base_layer.out_features
        self._slots: dict[str, tuple[str, str, float]] = {}  # name -> (down, up, scale)
        self._merged = False
        self.__dict__["_unmerged_base"] = None  # kept out of the module tree on purpose

    # -- construction helpers -------------------------------------------------------------------
    def _new_weight(self, rows: int, cols: int) -> nn.Parameter:
        dtype, device = _adapter_dtype(self.base_layer), _device(self.base_layer)
        return nn.Parameter(torch.zeros(rows, cols, dtype=dtype, device=device))

    def _add_slot(self, name: str, down: str, up: str, fan_in: int, r: int, scale: float) -> None:
        """Create ``down [r, fan_in]`` and ``up [out, r]`` (zeros; the subclass initialises them)
        and the persistent ``<name>_rank_mask`` buffer of ones."""
        setattr(self, down, self._new_weight(r, fan_in))
        setattr(self, up, self._new_weight(self.out_features, r))
        device = _device(self.base_layer)
        self.register_buffer(f"{name}_rank_mask", torch.ones(r, dtype=torch.float32, device=device))
        self._slots[name] = (down, up, float(scale))

    # -- rank slots -----------------------------------------------------------------------------
    def rank_slots(self) -> dict[str, RankSlot]:
        slots = {}
        for name, (down, up, scale) in self._slots.items():
            weight_down, weight_up = getattr(self, down), getattr(self, up)
            slots[name] = RankSlot(
                name=name,
                r_max=weight_down.shape[0],
                params_per_rank=weight_down.shape[1] + weight_up.shape[0],
                rank_mask=getattr(self, f"{name}_rank_mask"),
                down=down,
                up=up,
                scale=scale,
            )
        return slots

    def _slot(self, slot: str) -> RankSlot:
        slots = self.rank_slots()
        if slot not in slots:
            raise ConfigError(
                f"{type(self).__name__} has no rank slot {slot!r}; its slots are {sorted(slots)}."
            )
        if self._merged:
            raise ConfigError("cannot change rank masks of a merged layer; call unmerge() first.")
        return slots[slot]

    @torch.no_grad()
    def set_rank(self, slot: str, r: int) -> None:
        """Activate the first ``r`` ranks of ``slot`` (mask = ``r`` ones then zeros)."""
        info = self._slot(slot)
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= info.r_max:
            raise ConfigError(f"rank {r!r} for slot {slot!r} is out of range; expected 0..{info.r_max}.")
        info.rank_mask.zero_()
        info.rank_mask[:r] = 1.0

    @torch.no_grad()
    def set_rank_mask(self, slot: str, mask: torch.Tensor) -> None:
        """Copy ``mask`` (shape ``[r_max]``, finite; fractional values allowed) into ``slot``."""
        info = self._slot(slot)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if tuple(mask.shape) != (info.r_max,):
            raise ConfigError(
                f"rank mask for slot {slot!r} has shape {tuple(mask.shape)}; expected ({info.r_max},)."
            )
        if not torch.isfinite(mask).all():
            raise ConfigError(f"rank mask for slot {slot!r} has non-finite values.")
        info.rank_mask.copy_(mask)

    def active_params(self) -> int:
        """Trainable numbers at the current masks: sum over slots of nonzero(mask) * per-rank cost."""
        return sum(
            int(torch.count_nonzero(s.rank_mask)) * s.params_per_rank for s in self.rank_slots().values()
        )

    def adapter_params(self) -> dict[str, nn.Parameter]:
        """The adapter's trainable tensors, names relative to this layer (e.g. ``lora_A``)."""
        params = {}
        for down, up, _ in self._slots.values():
            params[down] = getattr(self, down)
            params[up] = getattr(self, up)
        return params

    def effective_adapter(self) -> EffectiveAdapter:
        """Active rank rows of ``down``, active columns of ``up`` times their mask values; exact:
        ``up[:, a] * m[a] @ down[a]`` equals ``up @ diag(m) @ down``."""
        tensors: dict[str, torch.Tensor] = {}
        ranks: dict[str, int] = {}
        alphas: dict[str, float | None] = {}
        with torch.no_grad():
            for name, slot in self.rank_slots().items():
                active = torch.nonzero(slot.rank_mask).flatten()
                down, up = getattr(self, slot.down), getattr(self, slot.up)
                tensors[slot.down] = down[active].detach().clone().contiguous()
                tensors[slot.up] = (up[:, active] * slot.rank_mask[active].to(up.dtype)).contiguous()
                ranks[name] = int(active.numel())
                alphas[name] = slot.scale * ranks[name] if ranks[name] else None
        return EffectiveAdapter(tensors=tensors, ranks=ranks, alphas=alphas)

    # -- merge ----------------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return self._merged

    def base_weight(self) -> torch.Tensor:
        """The frozen ``W0`` ``[out, in]`` (fp32 for a QuantLinear base)."""
        return linear_weight(self.base_layer)

    @abstractmethod
    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W', b')`` of the equivalent single linear layer at the current masks."""

    @torch.no_grad()
    def merge(self) -> None:
        """Replace ``base_layer`` by a plain ``nn.Linear`` holding ``W'``/``b'``; no-op if merged."""
        if self._merged:
            return
        weight, bias = self.merged_weight_and_bias()
        base = self.base_layer
        dtype = _adapter_dtype(base)
        merged = nn.Linear(
            self.in_features, self.out_features, bias=bias is not None, device=weight.device, dtype=dtype
        )
        merged.weight.copy_(weight)
        if bias is not None:
            merged.bias.copy_(bias)
        merged.requires_grad_(False)
        self.__dict__["_unmerged_base"] = base
        self.base_layer = merged
        self._merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put the original base layer back (the same object: bit-exact); no-op if not merged."""
        if not self._merged:
            return
        self.base_layer = self.__dict__["_unmerged_base"]
        self.__dict__["_unmerged_base"] = None
        self._merged = False

    def extra_repr(self) -> str:
        ranks = ", ".join(f"{n}={s.r_max}" for n, s in self.rank_slots().items())
        return f"{ranks}, merged={self._merged}"


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Every adapter layer of ``model``, by module path."""
    return {name: module for name, module in model.named_modules() if isinstance(module, AdapterLayer)}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every adapter tensor of ``model`` by full dotted name, found through ``adapter_params()``."""
    return {
        f"{path}.{name}" if path else name: param
        for path, layer in adapter_layers(model).items()
        for name, param in layer.adapter_params().items()
    }


def mark_only_adapters_trainable(model: nn.Module) -> int:
    """Freeze every parameter of ``model`` except the adapter tensors; returns how many numbers
    stay trainable."""
    model.requires_grad_(False)
    trainable = 0
    for param in adapter_parameters(model).values():
        param.requires_grad_(True)
        trainable += param.numel()
    return trainable
