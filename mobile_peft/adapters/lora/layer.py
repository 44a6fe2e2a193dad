"""The LoRA layer (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv 2106.09685).

Around a frozen linear ``h = W0 x + b0``::

    y = W0 x + b0 + (alpha / r) * ((dropout(x) @ A.T) * m) @ B.T

Shapes: ``x [..., in]``, ``A = lora_A [r, in]``, ``B = lora_B [out, r]``, rank mask
``m = lora_rank_mask [r]`` (``r`` is the module's maximum rank). Merged:
``W' = W0 + (alpha / r) * B diag(m) A``, ``b' = b0``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..base import AdapterLayer


def init_down(weight: torch.Tensor, init: str) -> None:
    """Initialise a down-projection ``[r, fan_in]`` in place: PEFT's kaiming-uniform
    (``a = sqrt(5)``, as ``nn.Linear``) for ``'default'``, ``N(0, 1/r)`` for ``'gaussian'``."""
    if weight.numel() == 0:
        return  # a zero-rank branch has nothing to initialise
    with torch.no_grad():
        if init == "gaussian":
            nn.init.normal_(weight, std=1.0 / weight.shape[0])
        else:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


class LoraLayer(AdapterLayer):
    """A frozen linear layer plus one masked low-rank branch (slot ``"lora"``).

    Args:
        base_layer: the frozen ``nn.Linear`` / ``QuantLinear`` (its parameters are frozen here).
        r: maximum rank (``lora_A`` rows, ``lora_B`` columns, mask length).
        alpha: the branch is scaled by ``alpha / r``.
        dropout: dropout probability on the branch input.
        init: ``'default'`` or ``'gaussian'`` (see :func:`init_down`); ``lora_B`` starts at zero,
            so the layer starts equal to its base.
    """

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_rank_mask: torch.Tensor

    def __init__(
        self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, init: str = "default"
    ) -> None:
        super().__init__(base_layer)
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.dropout_p = dropout
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._add_slot("lora", down="lora_A", up="lora_B", fan_in=self.in_features, r=r, scale=self.scaling)
        init_down(self.lora_A, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:  # a Python bool: fixed at export time
            return self.base_layer(x)
        z = F.linear(self.lora_dropout(x), self.lora_A) * self.lora_rank_mask
        return self.base_layer(x) + F.linear(z, self.lora_B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / r) * B diag(m) A`` ``[out, in]``, in float64."""
        a, b = self.lora_A.detach().double(), self.lora_B.detach().double()
        return self.scaling * (b * self.lora_rank_mask.double()) @ a

    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = self.base_weight().detach().double() + self.delta_weight()
        bias = self.base_layer.bias
        return weight, None if bias is None else bias.detach().clone()
