"""Aggregation rules for rank-heterogeneous LoRA updates, behind one interface.

Every rule maps the global adapter (full ``r_max`` factors per slot, see :mod:`.updates`) and the
round's accepted updates (each a prefix slice ``A_i[:r_i]``, ``B_i[:, :r_i]`` at the client's own
rank ``r_i`` on that slot, and its example count ``n_i``) to the next global adapter. The branch's
constant factor ``alpha / r_max`` is the same for every client, so rules work on the raw factors.
Weights are ``w_i = n_i / sum(n)`` over the clients that count for the quantity averaged.

``rank-aware`` (ours; the default)
    Per slot and per rank *column* ``j``, average ``A[j]`` and ``B[:, j]`` over the clients that
    actually trained that column (``r_i > j``), weighted by ``n_i``; a column nobody trained this
    round keeps its global value. Then *re-base* the slot: the SVD of the aggregated product
    ``B A = U S V^T`` (exact: its rank is at most ``r_max``; computed from two thin QRs) gives
    ``B = U sqrt(S)``, ``A = sqrt(S) V^T``, so the strongest directions sit in the first columns
    and a client of rank ``r`` next receives the best rank-``r`` approximation of the global update
    (Eckart-Young) while a full-rank client receives it exactly. Components with no energy get fresh
    ``A`` rows (the runtime's :func:`~mobile_peft.core.realloc.grow_init`) and zero ``B`` columns,
    so they can still learn. What the baselines do not: no dilution of high-rank columns by clients
    that never had them (HetLoRA's zero-padding shrinks column ``j`` by the share of clients with
    ``r_i <= j``), no pull of the whole update toward the low-rank clients' subspace (FlexLoRA sums
    every client's full product, so when most clients are small their directions dominate), and
    per-module ranks that differ across clients and change between rounds (a phone that re-allocated
    on device reports its new ranks) are handled the same way.
``fedavg``
    FedAvg on uniform-rank LoRA (every client trains the same rank): weighted mean of the factors.
    It refuses mixed ranks instead of silently averaging tensors that mean different things.
``hetlora``
    HetLoRA's aggregation (Cho et al., 2024): zero-pad every update to ``r_max`` and take the
    weighted mean over all clients; each client then receives the prefix of its rank. (HetLoRA's
    rank self-pruning is a client-side training regulariser, not part of the aggregation; left out.)
``flexlora``
    FlexLoRA (Bai et al., 2024): the weighted mean of the full products ``sum_i w_i B_i A_i``,
    re-factored by truncated SVD; the prefix a client of rank ``r`` receives is its rank-``r`` SVD
    re-factoring (the same null-component refill as ``rank-aware``).

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mobile_peft.core.errors import ConfigError
from mobile_peft.core.realloc import grow_init
from mobile_peft.core.registry import Registry

from .updates import Layout, Update

__all__ = ["RULES", "AggregationRule", "factored_svd", "get_rule", "refactor"]

_NULL = 1e-6  # singular values below this share of the largest (or exactly 0) count as "no energy"


class AggregationRule:
    """``aggregate(layout, global_params, updates, rng) -> new global params`` (full ``r_max``)."""

    name: str = ""
    uniform_ranks: bool = False  # clients must all train the same ranks (plain FedAvg)

    def aggregate(
        self,
        layout: Layout,
        params: dict[str, np.ndarray],
        updates: Sequence[Update],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError


RULES: Registry[AggregationRule] = Registry("aggregation rule")


def _register(cls: type[AggregationRule]) -> type[AggregationRule]:
    RULES.register(cls.name)(cls())
    return cls


def get_rule(name: str) -> AggregationRule:
    try:
        return RULES[name]
    except KeyError as exc:
        raise ConfigError(str(exc)) from None


def refactor(
    down: np.ndarray, up: np.ndarray, rng: np.random.Generator, product: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced SVD factors of ``up @ down`` (or of ``product``, truncated to ``r_max``):
    ``up' = U sqrt(S)``, ``down' = sqrt(S) V^T``, strongest first; null components get fresh
    ``down`` rows and zero ``up`` columns. Shapes: ``down`` ``[r_max, fan_in]``, ``up`` ``[fan_out, r_max]``."""
    r_max, fan_in = down.shape
    if product is None:
        u, s, vt = factored_svd(up, down)
    else:
        u, s, vt = np.linalg.svd(product.astype(np.float64), full_matrices=False)
        u, s, vt = u[:, :r_max], s[:r_max], vt[:r_max]
    k = s.size
    root = np.sqrt(s)
    new_up = np.zeros(up.shape, dtype=np.float64)
    new_down = np.zeros(down.shape, dtype=np.float64)
    new_up[:, :k] = u * root
    new_down[:k] = root[:, None] * vt
    null = np.flatnonzero(s <= _NULL * (s.max() if k and s.max() > 0 else 1.0))
    null = np.concatenate([null, np.arange(k, r_max)]).astype(int)
    if null.size:
        new_down[null] = grow_init(rng, null.size, fan_in)
        new_up[:, null] = 0.0
    return new_down.astype(np.float32), new_up.astype(np.float32)


def factored_svd(up: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD of ``up @ down`` (``[out, k] @ [k, in]``) without forming it, exact and cheap:
    ``up @ down = Qu (Ru Rd^T) Qd^T`` with thin QRs of ``up`` and ``down^T``; ``k`` singular values."""
    qu, ru = np.linalg.qr(up.astype(np.float64))
    qd, rd = np.linalg.qr(down.T.astype(np.float64))
    u, s, vt = np.linalg.svd(ru @ rd.T)
    return qu @ u, s, vt @ qd.T


def _weights(updates: Sequence[Update]) -> np.ndarray:
    n = np.asarray([u.examples for u in updates], dtype=np.float64)
    return n / n.sum()


def _holder_average(layout: Layout, params: dict[str, np.ndarray], updates: Sequence[Update]) -> dict[str, np.ndarray]:
    """Column j of every slot: the n-weighted mean over the clients with rank > j (else global)."""
    out = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
    n = np.asarray([u.examples for u in updates], dtype=np.float64)
    for key in layout.slots:
        down, up = layout.names(key)
        ranks = np.asarray([layout.rank(u.ranks, key) for u in updates])
        for j in range(layout.r_max(key)):
            holders = np.flatnonzero(ranks > j)
            if not holders.size:
                continue
            w = n[holders] / n[holders].sum()
            out[down][j] = sum(w[h] * updates[i].tensors[down][j] for h, i in enumerate(holders))
            out[up][:, j] = sum(w[h] * updates[i].tensors[up][:, j] for h, i in enumerate(holders))
    return out


@_register
class RankAware(AggregationRule):
    name = "rank-aware"
    rebase = True

    def aggregate(self, layout, params, updates, rng):  # noqa: ANN001 - see AggregationRule
        out = _holder_average(layout, params, updates)
        if self.rebase:
            for key in layout.slots:
                down, up = layout.names(key)
                out[down], out[up] = refactor(out[down], out[up], rng)
        return out


@_register
class RankAwareNoRebase(RankAware):
    """Ablation: the per-column holder averaging of ``rank-aware`` without the SVD re-basing."""

    name = "rank-aware-norebase"
    rebase = False


@_register
class FedAvg(AggregationRule):
    name = "fedavg"
    uniform_ranks = True

    def aggregate(self, layout, params, updates, rng):  # noqa: ANN001
        first = updates[0].ranks
        mixed = [u.client for u in updates if any(layout.rank(u.ranks, k) != layout.rank(first, k) for k in layout.slots)]
        if mixed:
            raise ConfigError(
                f"fedavg averages equal-rank LoRA only; clients {mixed[:3]} trained other ranks than "
                f"{updates[0].client}. Use --rule rank-aware (or hetlora / flexlora) for mixed ranks."
            )
        return _holder_average(layout, params, updates)  # equal ranks: the plain weighted mean


@_register
class HetLoRA(AggregationRule):
    name = "hetlora"

    def aggregate(self, layout, params, updates, rng):  # noqa: ANN001
        out = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
        w = _weights(updates)
        for key in layout.slots:
            down, up = layout.names(key)
            acc_d, acc_u = np.zeros_like(out[down]), np.zeros_like(out[up])
            held = 0
            for wi, u in zip(w, updates):
                r = layout.rank(u.ranks, key)
                held = max(held, r)
                if r:
                    acc_d[:r] += wi * u.tensors[down]
                    acc_u[:, :r] += wi * u.tensors[up]
            # Columns no client of the round trained keep their global value (a fairer baseline than
            # zeroing them for good); every other column is averaged over all clients, zeros included.
            out[down][:held], out[up][:, :held] = acc_d[:held], acc_u[:, :held]
        return out


@_register
class FlexLoRA(AggregationRule):
    name = "flexlora"

    def aggregate(self, layout, params, updates, rng):  # noqa: ANN001
        out = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
        w = _weights(updates)
        for key in layout.slots:
            down, up = layout.names(key)
            product = np.zeros((out[up].shape[0], out[down].shape[1]), dtype=np.float64)
            for wi, u in zip(w, updates):
                if layout.rank(u.ranks, key):
                    product += wi * (u.tensors[up].astype(np.float64) @ u.tensors[down].astype(np.float64))
            out[down], out[up] = refactor(out[down], out[up], rng, product=product)
        return out
