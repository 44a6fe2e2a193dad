"""What travels between the server and a phone: rank slices of the adapter, as numpy arrays.

The server holds the *global* adapter at full size: for every rank slot (``module``, ``slot``)
a down projection ``A`` ``[r_max, fan_in]`` and an up projection ``B`` ``[fan_out, r_max]`` (the
bundle's trainable tensors, by their manifest names and recorded roles). A client with active
rank ``r`` on a slot trains the prefix ``A[:r]``, ``B[:, :r]`` -- exactly what its prefix rank mask
``[1]*r + [0]*(r_max - r)`` lets the bundle's graph use -- so only that slice is sent down and
back up: :func:`slice_params` and :func:`pad_params` are the two directions.

numpy and the standard library only (the aggregation rules run on a server without torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mobile_peft.core.contract import ROLE_DOWN, ROLE_UP
from mobile_peft.core.errors import ConfigError
from mobile_peft.core.manifest import Trainable, slot_pairs
from mobile_peft.core.schedule import Ranks

__all__ = ["Layout", "Update", "ranks_from_json", "ranks_to_json"]


@dataclass(frozen=True)
class Layout:
    """The adapter's slots: ``(module, slot) -> (down tensor, up tensor)`` from the manifest."""

    pairs: dict[tuple[str, str], dict[str, Trainable]]

    @classmethod
    def from_trainable(cls, trainable: list[Trainable]) -> Layout:
        pairs = slot_pairs(trainable)
        broken = [f"{m}.{s}" for (m, s), p in pairs.items() if set(p) != {ROLE_DOWN, ROLE_UP}]
        if broken:
            raise ConfigError(
                f"slots {broken[:3]} lack a down or an up tensor; fleet aggregation needs LoRA-style "
                "(down, up) pairs in every slot (re-export the bundle with a LoRA or Hydra adapter)."
            )
        return cls(pairs)

    @property
    def slots(self) -> list[tuple[str, str]]:
        return list(self.pairs)

    def r_max(self, key: tuple[str, str]) -> int:
        return int(self.pairs[key][ROLE_DOWN].shape[0])

    def names(self, key: tuple[str, str]) -> tuple[str, str]:
        pair = self.pairs[key]
        return pair[ROLE_DOWN].name, pair[ROLE_UP].name

    def full_ranks(self) -> Ranks:
        out: Ranks = {}
        for (m, s) in self.pairs:
            out.setdefault(m, {})[s] = self.r_max((m, s))
        return out

    def uniform_ranks(self, rank: int) -> Ranks:
        out: Ranks = {}
        for (m, s) in self.pairs:
            out.setdefault(m, {})[s] = min(int(rank), self.r_max((m, s)))
        return out

    def rank(self, ranks: Ranks, key: tuple[str, str]) -> int:
        return int(ranks.get(key[0], {}).get(key[1], 0))

    def slice_params(self, params: dict[str, np.ndarray], ranks: Ranks) -> dict[str, np.ndarray]:
        """The tensors a client of ``ranks`` trains: ``A[:r]`` and ``B[:, :r]`` per slot (``r = 0``: none)."""
        out = {}
        for key in self.pairs:
            r = self.rank(ranks, key)
            if r:
                down, up = self.names(key)
                out[down] = np.ascontiguousarray(params[down][:r], dtype=np.float32)
                out[up] = np.ascontiguousarray(params[up][:, :r], dtype=np.float32)
        return out

    def pad_params(
        self, sliced: dict[str, np.ndarray], ranks: Ranks, fill: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Full ``r_max`` tensors: the slices of ``sliced`` over a copy of ``fill`` (the rest)."""
        out = {k: np.array(v, dtype=np.float32) for k, v in fill.items()}
        for key in self.pairs:
            r = self.rank(ranks, key)
            if r:
                down, up = self.names(key)
                out[down][:r] = sliced[down]
                out[up][:, :r] = sliced[up]
        return out

    def params_per_rank(self, key: tuple[str, str]) -> int:
        """Parameters one rank of a slot adds: a down row (``fan_in``) and an up column (``fan_out``)."""
        pair = self.pairs[key]
        return int(pair[ROLE_DOWN].shape[1] + pair[ROLE_UP].shape[0])

    def payload_bytes(self, ranks: Ranks) -> int:
        """float32 bytes of the slices a client of ``ranks`` sends (or receives)."""
        return sum(4 * self.rank(ranks, key) * self.params_per_rank(key) for key in self.pairs)


@dataclass
class Update:
    """One client's reply to a training round: its trained slices, the active ranks it trained
    them at (per module and slot; a phone that re-allocated on device reports its new ranks), and
    its number of local examples (the aggregation weight)."""

    client: str
    tensors: dict[str, np.ndarray]
    ranks: Ranks
    examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


def ranks_to_json(ranks: Ranks) -> str:
    return json.dumps(ranks, sort_keys=True)


def ranks_from_json(text: str) -> Ranks:
    """Parse a client's ranks (untrusted: shape checked here, values by :mod:`.robust`)."""
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"ranks are not JSON ({exc}); expected {{module: {{slot: rank}}}}.") from None
    if not isinstance(value, dict) or not all(
        isinstance(m, str) and isinstance(s, dict) and all(isinstance(k, str) for k in s) for m, s in value.items()
    ):
        raise ConfigError(f"ranks {str(text)[:80]!r} are not {{module: {{slot: rank}}}}.")
    return value
