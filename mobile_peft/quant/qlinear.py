"""Weight-only quantised linear layers for the frozen backbone.

The weights are stored as plain integer buffers plus floating-point scales and dequantised
inside ``forward`` with ordinary tensor ops (cast, floor, multiply, reshape). No tensor
subclasses: the layer must survive ``torch.export`` -> joint forward/backward graph ->
ExecuTorch / ONNX, where subclasses do not (see DESIGN.md).

* ``int8``: symmetric, per output channel. ``q = round(w / s)``, ``s = max|w_row| / 127``.
  Storage: ``qweight`` int8 ``[out, in]`` + ``scales`` fp32 ``[out]`` (~0.25x of fp32).
* ``int4``: symmetric, group-wise along the input dimension (``group_size`` inputs share a
  scale), values in ``[-8, 7]`` stored offset by 8 and packed two per byte (low nibble = even
  column). Storage: ``qweight`` uint8 ``[out, in / 2]`` + ``scales`` fp16 ``[out, in / group]``
  (~0.14x of fp32 with groups of 32).

A large layer dequantises in blocks of output rows (at most :data:`DEQUANT_BLOCK_BYTES` of fp32
each) and concatenates the blocks' outputs: the same values, but a training graph never holds
the whole fp32 weight, and its transposed copy, at once. That matters for a language model head
(``smolvlm-256m``: 49,280 x 576 = 108 MiB of fp32, and as much again for the transposed copy the
forward's matmul reads, both alive in the exported step at its peak).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..core.contract import QUANT_MODES
from ..core.errors import ConfigError

QuantMode = Literal["none", "int8", "int4"]
DEFAULT_INT4_GROUP = 32
# fp32 bytes one dequantised block may hold: only a model's largest layers are split (an LM head,
# a pixel-shuffle projector); smaller blocks would split every vision MLP too, adding graph nodes
# (export time) for little memory.
DEQUANT_BLOCK_BYTES = 16 * 2**20


def check_quant_mode(mode: str) -> str:
    if mode not in QUANT_MODES:
        raise ConfigError(f"quant={mode!r} is not a quantisation mode; expected one of {QUANT_MODES}.")
    return mode


def _int4_group(in_features: int, group_size: int) -> int:
    """The group size actually used: ``group_size`` when it divides ``in_features``, else one
    group per row (per-channel int4), which always divides."""
    if in_features % 2:
        raise ConfigError(
            f"int4 packs two weights per byte, so in_features must be even; got {in_features}. "
            "Use quant='int8' for this model."
        )
    return group_size if in_features % group_size == 0 else in_features


class QuantLinear(nn.Module):
    """A frozen ``nn.Linear`` whose weight is stored int8 or packed int4.

    Shapes: input ``[..., in_features]`` -> output ``[..., out_features]``. The bias, if any,
    stays fp32. Nothing in here is trainable.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        mode: Literal["int8", "int4"],
        group_size: int = DEFAULT_INT4_GROUP,
        block_bytes: int | None = DEQUANT_BLOCK_BYTES,
    ) -> None:
        super().__init__()
        if mode not in ("int8", "int4"):
            raise ConfigError(f"QuantLinear mode must be 'int8' or 'int4', got {mode!r}.")
        self.in_features = in_features
        self.out_features = out_features
        self.mode = mode
        self.block_bytes = block_bytes  # None: dequantise the whole weight at once
        if mode == "int8":
            self.group_size = in_features
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32))
        else:
            self.group_size = _int4_group(in_features, group_size)
            n_groups = in_features // self.group_size
            self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float16))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32))
        else:
            self.bias = None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, mode: Literal["int8", "int4"], group_size: int = DEFAULT_INT4_GROUP
    ) -> QuantLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, mode, group_size)
        layer.quantize_(linear.weight.detach())
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    @torch.no_grad()
    def quantize_(self, weight: torch.Tensor) -> None:
        w = weight.float()
        if self.mode == "int8":
            scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            q = torch.round(w / scale[:, None]).clamp(-127, 127)
            self.qweight.copy_(q.to(torch.int8))
            self.scales.copy_(scale)
            return
        g = self.group_size
        grouped = w.reshape(self.out_features, -1, g)
        scale = (grouped.abs().amax(dim=2).clamp(min=1e-8) / 7.0).half()
        q = torch.round(grouped / scale.float()[..., None]).clamp(-8, 7) + 8  # 0..15
        q = q.reshape(self.out_features, -1, 2).to(torch.uint8)
        self.qweight.copy_(q[..., 0] | (q[..., 1] << 4))
        self.scales.copy_(scale)

    def dequantized_weight(self, rows: slice | None = None) -> torch.Tensor:
        """The fp32 weight ``[out, in]`` (or its ``rows``), built from export-friendly ops only."""
        # No slice for the whole weight: a traced slice is a copy in ExecuTorch (``slice_copy``).
        qweight, scales = (self.qweight, self.scales) if rows is None else (self.qweight[rows], self.scales[rows])
        if self.mode == "int8":
            return qweight.to(torch.float32) * scales[:, None]
        packed = qweight.to(torch.float32)  # [rows, in/2], values 0..255
        high = torch.floor(packed / 16.0)
        low = packed - high * 16.0
        q = torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1, self.group_size) - 8.0
        return (q * scales.to(torch.float32)[..., None]).reshape(packed.shape[0], self.in_features)

    def row_blocks(self) -> list[slice]:
        """The output rows dequantised together: one block unless the fp32 weight exceeds
        ``block_bytes``, then equal blocks of at most that many bytes."""
        row_bytes = self.in_features * 4
        if self.block_bytes is None or self.out_features * row_bytes <= self.block_bytes:
            return [slice(0, self.out_features)]
        n = -(-self.out_features // max(1, self.block_bytes // row_bytes))  # fewest blocks that fit
        size = -(-self.out_features // n)  # as equal as they can be
        return [slice(i, min(i + size, self.out_features)) for i in range(0, self.out_features, size)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.row_blocks()
        if len(blocks) == 1:
            return nn.functional.linear(x, self.dequantized_weight(), self.bias)
        outputs = [
            nn.functional.linear(x, self.dequantized_weight(rows), None if self.bias is None else self.bias[rows])
            for rows in blocks
        ]
        return torch.cat(outputs, dim=-1)

    def storage_bytes(self) -> int:
        """Bytes held by the weight (integer values + scales), bias excluded."""
        return self.qweight.numel() * self.qweight.element_size() + self.scales.numel() * self.scales.element_size()

    def extra_repr(self) -> str:
        blocks = len(self.row_blocks())
        return (f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}, "
                f"group_size={self.group_size}" + (f", row_blocks={blocks}" if blocks > 1 else ""))


def linear_weight(layer: nn.Module) -> torch.Tensor:
    """The fp32 weight ``[out, in]`` of an ``nn.Linear`` or a :class:`QuantLinear`."""
    if isinstance(layer, QuantLinear):
        return layer.dequantized_weight()
    if isinstance(layer, nn.Linear):
        return layer.weight
    raise TypeError(f"expected nn.Linear or QuantLinear, got {type(layer).__name__}")


def is_linear(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear | QuantLinear)
