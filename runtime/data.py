"""The training data stream: fixed-size batches whose position (epoch, index, seed) is explicit,
so a resumed run sees the very same batches. Examples come from the core's readers
(:func:`mobile_peft.core.datasets.load_dataset`: the embedded digits tasks or a data folder) and
are encoded by the core's :class:`~mobile_peft.core.encode.Encoder` -- what a phone does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mobile_peft.core.encode import Encoder
from mobile_peft.core.errors import DataError
from mobile_peft.core.examples import VQAExample

__all__ = ["DataStream", "StreamPosition"]


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream is: ``index`` examples into ``epoch``'s permutation of a seed's order."""

    epoch: int = 0
    index: int = 0
    seed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}


class DataStream:
    """Fixed-size batches in a per-epoch shuffled order that depends only on ``(seed, epoch)``,
    so restoring a :class:`StreamPosition` reproduces the remaining batches exactly. A batch that
    crosses an epoch boundary takes the rest of one epoch and the start of the next."""

    def __init__(
        self, examples: Sequence[VQAExample], encoder: Encoder, position: StreamPosition | None = None
    ) -> None:
        if not examples:
            raise DataError("the training data has no examples.")
        self.examples = list(examples)
        self.encoder = encoder
        self.position = position or StreamPosition()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # Every example's text encodes before the first step (a too-long line fails now, naming its
        # file and line); images are encoded on first use, so a large image size costs no memory up front.
        self._text = [encoder.text(e.question, e.answer, e.source) for e in self.examples]

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.position.seed, epoch]).permutation(len(self.examples))

    def _encoded(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if i not in self._cache:
            self._cache[i] = (self.encoder.image(self.examples[i].image), *self._text[i])
        return self._cache[i]

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch, index, seed = self.position.epoch, self.position.index, self.position.seed
        chosen: list[int] = []
        order = self._order(epoch)
        while len(chosen) < self.encoder.batch_size:
            if index == len(order):
                epoch, index = epoch + 1, 0
                order = self._order(epoch)
            chosen.append(int(order[index]))
            index += 1
        self.position = StreamPosition(epoch, index, seed)
        rows = [self._encoded(i) for i in chosen]
        return tuple(np.stack([r[k] for r in rows]) for k in range(3))  # type: ignore[return-value]
