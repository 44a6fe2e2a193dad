"""Screening client updates before aggregation: a malformed or hostile update is refused, the
round goes on with the others.

Checks, in order (the first failure is the reason recorded):

1. ranks: every adapted ``(module, slot)`` and nothing else, whole numbers in ``0..r_max``
   (a rule that needs uniform ranks also requires the ranks the server sent);
2. tensors: exactly the slices those ranks imply (``A[:r]`` ``[r, fan_in]``, ``B[:, :r]``
   ``[fan_out, r]``), float, every value finite (no NaN/Inf);
3. example count: a whole number in ``1..max_examples`` (it is the aggregation weight: a client
   claiming a billion examples would own the average);
4. norm: the RMS of the update's change from the global slice, compared with the other accepted
   updates of the round by a median/MAD rule: refused when
   ``(rms - median) / max(1.4826 * MAD, 0.1 * median) > mad_k`` (only with at least
   ``min_for_norm`` updates; the floor keeps near-identical norms from flagging tiny differences).

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mobile_peft.core.schedule import Ranks

from .updates import Layout, Update

__all__ = ["Rejection", "ScreenConfig", "screen_updates"]


@dataclass(frozen=True)
class ScreenConfig:
    max_examples: int = 1_000_000
    mad_k: float = 5.0
    min_for_norm: int = 3


@dataclass(frozen=True)
class Rejection:
    client: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"client": self.client, "reason": self.reason}


def _is_whole(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _rank_problem(layout: Layout, ranks: Ranks, sent: Ranks | None) -> str | None:
    if not isinstance(ranks, dict):
        return "ranks are not a {module: {slot: rank}} object"
    expected = {m for m, _ in layout.slots}
    unknown = sorted(set(ranks) - expected)
    if unknown:
        return f"ranks name modules the adapter does not have, e.g. {unknown[0]!r}"
    for key in layout.slots:
        module, slot = key
        value = ranks.get(module, {}).get(slot) if isinstance(ranks.get(module), dict) else None
        if value is None:
            return f"no rank for {module}.{slot}"
        if not _is_whole(value) or not 0 <= int(value) <= layout.r_max(key):
            return f"rank {value!r} of {module}.{slot} is outside 0..r_max={layout.r_max(key)}"
        if sent is not None and int(value) != layout.rank(sent, key):
            return f"rank {value} of {module}.{slot} differs from the {layout.rank(sent, key)} this rule requires"
    extra = [f"{m}.{s}" for m, slots in ranks.items() for s in slots if (m, s) not in layout.pairs]
    if extra:
        return f"ranks name slots the adapter does not have, e.g. {extra[0]!r}"
    return None


def _tensor_problem(layout: Layout, update: Update) -> str | None:
    expected: dict[str, tuple[int, ...]] = {}
    for key, pair in layout.pairs.items():
        r = layout.rank(update.ranks, key)
        if r:
            down, up = layout.names(key)
            expected[down] = (r, pair["down"].shape[1])
            expected[up] = (pair["up"].shape[0], r)
    got = update.tensors
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing:
        return f"missing tensor {missing[0]!r} for the ranks it reported ({len(missing)} missing)"
    if extra:
        return f"unexpected tensor {extra[0]!r} (not a slice its ranks imply)"
    for name, shape in expected.items():
        value = got[name]
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            return f"{name} is not a float array"
        if tuple(value.shape) != shape:
            return f"{name} has shape {tuple(value.shape)}; its ranks imply {shape}"
        if not np.isfinite(value).all():
            return f"{name} has non-finite values (NaN/Inf)"
    return None


def _change_rms(layout: Layout, update: Update, params: dict[str, np.ndarray]) -> float:
    sq, count = 0.0, 0
    for name, value in update.tensors.items():
        ref = params[name][tuple(slice(0, d) for d in value.shape)]
        sq += float(np.square(value.astype(np.float64) - ref).sum())
        count += value.size
    return float(np.sqrt(sq / max(count, 1)))


def screen_updates(
    layout: Layout,
    params: dict[str, np.ndarray],
    updates: Sequence[Update],
    config: ScreenConfig = ScreenConfig(),
    required_ranks: dict[str, Ranks] | None = None,
) -> tuple[list[Update], list[Rejection]]:
    """(accepted, rejected) updates of a round. ``required_ranks`` (client -> ranks): the ranks a
    uniform-rank rule insists on."""
    accepted: list[Update] = []
    rejected: list[Rejection] = []
    for update in updates:
        sent = required_ranks.get(update.client) if required_ranks else None
        reason = _rank_problem(layout, update.ranks, sent) or _tensor_problem(layout, update)
        if reason is None and not (_is_whole(update.examples) and 1 <= int(update.examples) <= config.max_examples):
            reason = f"example count {update.examples!r} is outside 1..{config.max_examples:,}"
        if reason is None:
            accepted.append(update)
        else:
            rejected.append(Rejection(update.client, reason))
    if len(accepted) >= config.min_for_norm:
        rms = np.asarray([_change_rms(layout, u, params) for u in accepted])
        median = float(np.median(rms))
        spread = max(1.4826 * float(np.median(np.abs(rms - median))), 0.1 * median, 1e-12)
        keep = []
        for u, value in zip(accepted, rms):
            z = (value - median) / spread
            if z > config.mad_k:
                rejected.append(Rejection(u.client, f"update norm (RMS change {value:.3g}) is {z:.1f} MADs above "
                                                    f"the round's median {median:.3g} (limit {config.mad_k})"))
            else:
                keep.append(u)
        accepted = keep
    return accepted, rejected
