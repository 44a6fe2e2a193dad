"""The Hydra layer (Kim et al., 2023, "Hydra: Multi-head Low-rank Adaptation for Parameter
Efficient Fine-tuning", arXiv 2309.06922).

Around a frozen linear ``h = W0 x + b0``, a *parallel* branch reads the layer's input and a
*sequential* branch reads the frozen layer's output::

    y = h + s_p * Up diag(m_p) Dp dropout(x) + s_s * Us diag(m_s) Ds dropout(h)

Shapes: ``x [..., in]``, ``h, y [..., out]``; ``Dp = parallel_down [rp, in]``,
``Up = parallel_up [out, rp]``, ``Ds = sequential_down [rs, out]``, ``Us = sequential_up [out, rs]``;
masks ``m_p = parallel_rank_mask [rp]``, ``m_s = sequential_rank_mask [rs]``; scales
``s_p = alpha_p / rp`` and ``s_s = alpha_s / rs`` (0 for a branch of rank 0). Merged (zero
inference latency)::

    W' = W0 + s_p Up diag(m_p) Dp + s_s Us diag(m_s) Ds W0
    b' = b0 + s_s Us diag(m_s) Ds b0

Without ``b0`` the merged bias is exactly zero, so the merged layer keeps no bias. The merge is
computed in float64 and cast to the base dtype. (The authors' released merge code is reported
to have a shape bug for attention projections; this one is checked numerically by tests on
non-square projections, GQA k/v included.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..base import AdapterLayer
from ..lora.layer import init_down


class HydraLayer(AdapterLayer):
    """A frozen linear layer plus Hydra's parallel and sequential masked low-rank branches.

    Args:
        base_layer: the frozen ``nn.Linear`` / ``QuantLinear``.
        r_parallel, r_sequential: maximum ranks of the two branches (either may be 0, not both).
        alpha_parallel, alpha_sequential: branch scale numerators (``s = alpha / r``).
        dropout: dropout probability on each branch's input.
        init: down-projections ``'default'`` kaiming-uniform or ``'gaussian'``; up-projections zero,
            so the layer starts equal to its base.
    """

    parallel_down: nn.Parameter
    parallel_up: nn.Parameter
    sequential_down: nn.Parameter
    sequential_up: nn.Parameter
    parallel_rank_mask: torch.Tensor
    sequential_rank_mask: torch.Tensor

    def __init__(
        self,
        base_layer: nn.Module,
        r_parallel: int,
        r_sequential: int,
        alpha_parallel: float,
        alpha_sequential: float,
        dropout: float = 0.0,
        init: str = "default",
    ) -> None:
        super().__init__(base_layer)
        self.parallel_scale = alpha_parallel / r_parallel if r_parallel else 0.0
        self.sequential_scale = alpha_sequential / r_sequential if r_sequential else 0.0
        self.dropout_p = dropout
        self.hydra_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        out = self.out_features
        self._add_slot(
            "parallel", "parallel_down", "parallel_up", self.in_features, r_parallel, self.parallel_scale
        )
        self._add_slot(
            "sequential", "sequential_down", "sequential_up", out, r_sequential, self.sequential_scale
        )
        init_down(self.parallel_down, init)
        init_down(self.sequential_down, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        if self.merged:  # a Python bool: fixed at export time
            return h
        p = F.linear(
            F.linear(self.hydra_dropout(x), self.parallel_down) * self.parallel_rank_mask, self.parallel_up
        )
        s = F.linear(
            F.linear(self.hydra_dropout(h), self.sequential_down) * self.sequential_rank_mask,
            self.sequential_up,
        )
        return h + self.parallel_scale * p + self.sequential_scale * s

    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        def branch(down: torch.Tensor, up: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
            return scale * (up.detach().double() * mask.double()) @ down.detach().double()  # [out, fan_in]

        w0 = self.base_weight().detach().double()
        par = branch(self.parallel_down, self.parallel_up, self.parallel_rank_mask, self.parallel_scale)
        seq = branch(
            self.sequential_down, self.sequential_up, self.sequential_rank_mask, self.sequential_scale
        )
        weight = w0 + par + seq @ w0  # [out, in] + [out, in] + [out, out] @ [out, in]
        b0 = self.base_layer.bias
        if b0 is None:
            return weight, None
        return weight, b0.detach().double() + seq @ b0.detach().double()
