"""``ard``: ARD-LoRA (Muhammad et al., 2025, "ARD-LoRA: Dynamic Rank Allocation for
Parameter-Efficient Fine-Tuning of Foundation Models with Heterogeneous Adaptation Needs") --
learnable per-slot scaling factors with soft rank masks.

Every rank slot ``i`` (per module, since LoRA's low-rank branch has no heads; Hydra's two
branches are two slots) has a learnable ``alpha_i in [0, 1]``; with ``r0 = r_max`` its soft rank
mask is ``m_ij = clamp(r0 * alpha_i - j, 0, 1)`` for ``j = 0..r0-1``: ``floor(r0 alpha)`` ones,
one fractional column, then exact zeros -- continuous and differentiable in ``alpha``.
The objective is ``L_task + lambda1 * ||alpha||_1 + lambda2 * TV(alpha)`` where TV sums
``|alpha_{l+1} - alpha_l|`` over adjacent layers of the same tower, module type and slot.

Budget (our design; the paper does not publish one): a soft mask costs ``nonzero(m) *
params_per_rank = ceil(r0 alpha) * params_per_rank``. After every optimiser step the alphas are
rescaled by one shared factor ``c`` (bisection) so that this cost is within 1% of the budget;
the L1 term (a constant pull on every alpha) then shifts rank from weak to strong slots rather
than shrinking the total.

Floor (ours): the first ``min_rank`` columns of the slots
:func:`~mobile_peft.core.perf_model.rank_floor` picks with ``per_module`` -- every slot, else the
cheaper slot of each module, else none, whichever first takes at most half the budget -- stay
whole (mask 1, no gradient into alpha), and alpha moves the columns above them. Without it, at a
budget of about one rank per slot (Hydra adapters at a LoRA-rank-2 budget) nothing can move: the
projection pins the largest alpha at one column and scales every other slot's only column to a
fraction of 1, damping those branches for the whole run without freeing any budget (ARD on Hydra
adapters was -2.5 +- 1.5 points below uniform in the rank benchmark of record before the floor;
on its validation cut -3.5 without and -0.1 with it: benchmarks/README.md).

Frozen for export: each slot keeps exactly the columns its soft mask has on (``ceil(r0 alpha)``,
already within the budget by the projection), and the mask values -- the fractional last column
included -- are folded into the up-projection's columns, so the frozen adapter computes what was
trained. (Freezing to ``max(1, round(r0 alpha))`` hard ones instead switched a fractional column
of, say, 0.3 to 1 -- a trained branch silently scaled by 3x at the end of training. At a budget of
about one rank per slot every slot has only that one fractional column, which is how ARD on
Hydra adapters fell 15.7 points below uniform in the first rank benchmark.)
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...adapters.base import adapter_layers
from ...core.errors import ConfigError
from ...core.perf_model import rank_floor
from ...core.schedule import units_to_ranks
from ...core.units import module_place, split_unit, unit_key
from ...train.trainer import TrainConfig, train
from ..base import Allocator, DynamicSession, adapter_kind, schedule_from_ranks
from ..registry import ALLOCATORS
from ..schedule import BUDGET_TOLERANCE, Phase, RankSchedule

__all__ = ["ARDConfig", "ARDLoraAllocator", "ARDMasks", "soft_mask", "tv_pairs"]

logger = logging.getLogger(__name__)
_EPS = 1e-4


@dataclass
class ARDConfig:
    lambda1: float = field(default=1e-3, metadata={"help": "Weight of the L1 sparsity term on alpha."})
    lambda2: float = field(
        default=1e-3, metadata={"help": "Weight of the total variation of alpha across adjacent layers."}
    )
    plan_steps: int = field(default=30, metadata={"help": "Training steps `plan` runs to learn alpha."})
    plan_batch_size: int = field(default=16, metadata={"help": "Batch size of the planning run."})
    lr: float = field(default=3e-3, metadata={"help": "Learning rate of the planning run."})
    alpha_scale: float = field(
        default=10.0, metadata={"help": "alpha = alpha_scale * raw parameter (a faster alpha lr)."}
    )
    min_rank: int = field(
        default=1,
        metadata={
            "help": "Columns kept fully on in the floor slots (the core's rank_floor: every slot, else one per "
            "module, else none -- the first within half the budget); alpha moves the rest. 0: alpha moves all."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the planning run."})

    def __post_init__(self) -> None:
        for name in ("lambda1", "lambda2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}; expected >= 0.")
        if isinstance(self.min_rank, bool) or not isinstance(self.min_rank, int) or self.min_rank < 0:
            raise ConfigError(f"min_rank={self.min_rank!r}; expected an integer >= 0.")
        if self.plan_steps < 1 or self.alpha_scale <= 0:
            raise ConfigError(
                f"plan_steps={self.plan_steps}, alpha_scale={self.alpha_scale}: need >= 1 and > 0."
            )


def soft_mask(alpha: torch.Tensor, r0: int, floor: int = 0) -> torch.Tensor:
    """Forward: ``clamp(r0 * alpha - j, 0, 1)`` for ``j = 0..r0-1`` (``alpha`` a 0-d tensor), the
    first ``floor`` columns held at 1, values below EPS cut to exact zeros so that "nonzero" (the
    budget count) is robust to float rounding: the slot holds ``k = max(floor, ceil(r0 * alpha -
    EPS))`` ranks.

    Backward (straight-through): ``d m_j / d alpha = r0`` on the last active and the first inactive
    column (``j = k-1, k``) unless held by the floor, zero elsewhere. The plain clamp has no
    gradient once the budget projection puts ``r0 * alpha`` on an integer (every column saturated
    or cut), which froze alpha in our first benchmark run; the boundary columns are exactly the
    ones a rank change moves."""
    j = torch.arange(r0, dtype=alpha.dtype, device=alpha.device)
    x = r0 * alpha - j
    hard = x.detach().clamp(0.0, 1.0)
    hard = hard * (hard > _EPS)
    held = j < floor
    hard = torch.where(held, torch.ones_like(hard), hard)
    k = int(torch.count_nonzero(hard))
    window = (((j == k - 1) | (j == k)) & ~held).to(alpha.dtype)
    return hard + (x - x.detach()) * window


def tv_pairs(units: list[str]) -> list[tuple[int, int]]:
    """Index pairs of units in adjacent layers of the same tower, module type and slot."""
    by_key: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    for i, u in enumerate(units):
        module, slot = split_unit(u)
        place = module_place(module)
        by_key.setdefault((place.tower, place.kind, slot), []).append((place.layer, i))
    pairs = []
    for members in by_key.values():
        members.sort()
        pairs += [(a, b) for (la, a), (lb, b) in zip(members, members[1:]) if lb == la + 1]
    return pairs


class ARDMasks(nn.Module):
    """The learnable alphas and the regulariser. Used as the trainer's ``extra_loss``: calling it
    returns ``lambda1 * ||alpha||_1 + lambda2 * TV(alpha)``; its forward pre-hooks on the adapter
    layers write the differentiable soft masks into the layers' rank-mask slots."""

    def __init__(self, model: nn.Module, config: ARDConfig, init_ranks: dict[str, int], budget: int) -> None:
        super().__init__()
        self.config = config
        self.budget = budget
        layers = adapter_layers(model)
        self.units = sorted(init_ranks)
        slots = {u: layers[split_unit(u)[0]].rank_slots()[split_unit(u)[1]] for u in self.units}
        self.r0 = [slots[u].r_max for u in self.units]
        self.cost = [slots[u].params_per_rank for u in self.units]
        held = rank_floor(
            {u: {"r_max": r0, "params_per_rank": c} for u, r0, c in zip(self.units, self.r0, self.cost)},
            budget,
            config.min_rank,
            per_module=True,
        )
        self.floor = [held.get(u, 0) for u in self.units]
        init = torch.tensor([init_ranks[u] / r0 for u, r0 in zip(self.units, self.r0)], dtype=torch.float32)
        self.raw = nn.Parameter(init / config.alpha_scale)
        self.pairs = tv_pairs(self.units)
        self.__dict__["_layers"] = layers  # not submodules: only the alphas are this module's parameters
        self._hooks: list[Any] = []
        by_layer: dict[str, list[int]] = {}
        for i, u in enumerate(self.units):
            by_layer.setdefault(split_unit(u)[0], []).append(i)
        for path, idx in by_layer.items():
            self._hooks.append(layers[path].register_forward_pre_hook(self._make_hook(idx)))
        self.project()

    @property
    def alpha(self) -> torch.Tensor:
        return self.raw * self.config.alpha_scale

    def regulariser(self, alpha: torch.Tensor) -> torch.Tensor:
        l1 = alpha.abs().sum()
        tv = sum((alpha[a] - alpha[b]).abs() for a, b in self.pairs) if self.pairs else alpha.new_zeros(())
        return self.config.lambda1 * l1 + self.config.lambda2 * tv

    def forward(self, model: nn.Module | None = None) -> torch.Tensor:
        return self.regulariser(self.alpha)

    def _make_hook(self, idx: list[int]):
        def hook(layer: nn.Module, args: Any) -> None:
            alpha = self.alpha
            for i in idx:
                slot = split_unit(self.units[i])[1]
                mask = soft_mask(alpha[i], self.r0[i], self.floor[i])
                layer._buffers[f"{slot}_rank_mask"] = mask if torch.is_grad_enabled() else mask.detach()

        return hook

    # -- budget -----------------------------------------------------------------------------------
    def hard_cost(self, alpha: torch.Tensor) -> int:
        """Trainable numbers the soft masks of ``alpha`` hold: ``max(floor, ceil(r0 alpha))`` columns
        per slot."""
        total = 0
        for a, r0, ppr, floor in zip(alpha.tolist(), self.r0, self.cost, self.floor):
            x = min(max(r0 * a, 0.0), r0)
            r = max(math.ceil(x - _EPS), floor)
            total += min(r, r0) * ppr
        return total

    def _fit_scale(self, alpha: torch.Tensor) -> float:
        """Largest shared factor ``c`` with cost(c * alpha) <= budget (+1%), by bisection."""
        limit = self.budget * (1 + BUDGET_TOLERANCE)
        lo, hi = 0.0, 1.0
        while self.hard_cost(alpha * hi) <= limit and hi < 1e6:
            lo, hi = hi, hi * 2
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.hard_cost(alpha * mid) <= limit else (lo, mid)
        return lo

    @torch.no_grad()
    def project(self) -> None:
        """Clamp alpha to [0, 1], rescale it to spend the budget, write the (detached) masks."""
        alpha = self.alpha.clamp(1e-4, 1.0)
        alpha = (alpha * self._fit_scale(alpha)).clamp(0.0, 1.0)
        self.raw.copy_(alpha / self.config.alpha_scale)
        for i, u in enumerate(self.units):
            module, slot = split_unit(u)
            # a fresh tensor: the hook's buffer is a node of the last step's (used) graph
            self._layers[module]._buffers[f"{slot}_rank_mask"] = soft_mask(
                alpha[i], self.r0[i], self.floor[i]
            ).clone()

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        self.project()

    @torch.no_grad()
    def frozen_ranks(self) -> dict[str, int]:
        """The ranks the layers' soft masks hold now: their nonzero columns (a prefix; within the
        budget by the projection)."""
        return {u: int(torch.count_nonzero(self._slot(u).rank_mask)) for u in self.units}

    def _slot(self, unit: str) -> Any:
        module, slot = split_unit(unit)
        return self._layers[module].rank_slots()[slot]

    @torch.no_grad()
    def fold_into_weights(self) -> None:
        """Multiply each slot's up-projection columns by its current mask values (the function of
        the layer is unchanged once the mask is then set to hard ones on the same support)."""
        for u in self.units:
            info = self._slot(u)
            up = getattr(self._layers[split_unit(u)[0]], info.up)
            up.mul_(info.rank_mask.to(up.dtype))

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


class _ARDSession(DynamicSession):
    def __init__(self, schedule: RankSchedule, masks: ARDMasks, model: nn.Module, total_steps: int) -> None:
        super().__init__(schedule=schedule, callbacks=[masks], extra_loss=masks)
        self.masks = masks
        self.total_steps = total_steps

    def finish(self, model: nn.Module) -> RankSchedule:
        """Freeze: the soft masks' support as hard ranks, their values folded into the up columns
        (the model computes the same function before and after), hooks removed."""
        self.masks.remove()
        ranks = units_to_ranks(self.masks.frozen_ranks())
        self.masks.fold_into_weights()
        for module, layer in adapter_layers(model).items():
            for slot in layer.rank_slots():
                layer.set_rank(slot, ranks.get(module, {}).get(slot, 0))
        frozen = schedule_from_ranks(model, "ard", self.schedule.adapter, self.schedule.budget_params, ranks)
        self.schedule = frozen
        return frozen


@ALLOCATORS.register("ard")
class ARDLoraAllocator(Allocator):
    name = "ard"

    def __init__(self, **options: Any) -> None:
        self.config = ARDConfig(**options)

    def plan(self, model: nn.Module, train_ds: Any, eval_ds: Any, budget: int) -> RankSchedule:
        """Learn alpha in a short run on a copy of the model and freeze it."""
        from ..uniform import UniformAllocator

        work = copy.deepcopy(model)
        start = UniformAllocator().plan(work, train_ds, eval_ds, budget)
        session = self.session(work, start, self.config.plan_steps)
        cfg = TrainConfig(
            steps=self.config.plan_steps,
            batch_size=self.config.plan_batch_size,
            lr=self.config.lr,
            seed=self.config.seed,
        )
        train(work, train_ds, cfg, callbacks=session.callbacks, extra_loss=session.extra_loss)
        frozen = session.finish(work)
        return schedule_from_ranks(model, self.name, adapter_kind(model), budget, frozen.phases[0].ranks)

    def session(
        self, model: nn.Module, schedule: RankSchedule, total_steps: int, train_ds: Any = None
    ) -> DynamicSession:
        schedule.check_model(model)
        ranks = schedule.phases[0].ranks
        init = {
            unit_key(m, s): r
            for m, slots in ranks.items()
            for s, r in slots.items()
            if schedule.modules[m][s]["r_max"] > 0
        }
        masks = ARDMasks(model, self.config, init, schedule.budget_params)
        start = RankSchedule(
            "ard", schedule.adapter, schedule.budget_params, schedule.modules, [Phase(0, ranks)]
        )
        return _ARDSession(start, masks, model, total_steps)
