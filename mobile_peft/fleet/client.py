"""A phone's side of a round: train the bundle with the on-device runtime from the server's slices.

:class:`LocalTrainer` drives the runtime's engine (:func:`mobile_peft.runtime.engine.make_engine`:
ONNX Runtime training or ExecuTorch, the code path a phone runs -- no torch autograd) with the
runtime's data stream and the core's encoder. One :meth:`~LocalTrainer.fit`: a fresh engine (fresh
optimiser state, as a phone starting a round), the adapter set to the server's slices (the rest of
each ``r_max`` tensor is zero and masked off), the rank masks of the client's ranks, ``steps``
optimiser steps; a step with a non-finite loss or gradient is not applied (as in
:mod:`mobile_peft.runtime.trainer`). :meth:`~LocalTrainer.accuracy` scores with the bundle's eval
method and the runtime's :func:`~mobile_peft.runtime.evaluate.correct_answers`.

Imports only :mod:`mobile_peft.runtime` and :mod:`mobile_peft.core` (no torch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mobile_peft.core.examples import VQAExample
from mobile_peft.core.schedule import Ranks
from mobile_peft.runtime.bundle import Bundle
from mobile_peft.runtime.data import DataStream, StreamPosition
from mobile_peft.runtime.engine import make_engine
from mobile_peft.runtime.evaluate import correct_answers

from .updates import Layout

__all__ = ["FitResult", "LocalTrainer"]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    tensors: dict[str, np.ndarray]  # the trained slices at ``ranks``
    ranks: Ranks
    examples: int
    losses: list[float] = field(default_factory=list)
    bad_steps: int = 0
    seconds: float = 0.0


class LocalTrainer:
    """Local training and evaluation of one bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, lr: float | None = None) -> None:
        self.bundle = bundle
        self.layout = Layout.from_trainable(bundle.trainable)
        self.lr = lr
        self._encoder = bundle.encoder()
        self._zeros = {t.name: np.zeros(t.shape, dtype=np.float32) for t in bundle.trainable}
        self._eval_engine: Any = None

    def full(self, sliced: dict[str, np.ndarray], ranks: Ranks) -> dict[str, np.ndarray]:
        """``r_max`` tensors for the graph: the slices, zeros elsewhere (masked off anyway)."""
        return self.layout.pad_params(sliced, ranks, self._zeros)

    def fit(
        self,
        sliced: dict[str, np.ndarray],
        ranks: Ranks,
        examples: Sequence[VQAExample],
        steps: int,
        seed: int = 0,
        lr: float | None = None,
    ) -> FitResult:
        """``steps`` local steps from ``sliced`` at ``ranks`` (``lr``: default the trainer's, else the manifest's)."""
        start = time.perf_counter()
        engine = make_engine(self.bundle, lr if lr is not None else self.lr)
        engine.set_parameters(self.full(sliced, ranks))
        masks = self.bundle.schedule.input_masks(ranks)
        stream = DataStream(examples, self._encoder, StreamPosition(seed=seed))
        losses, bad = [], 0
        for _ in range(steps):
            pixels, ids, labels = stream.next_batch()
            loss = engine.forward_backward([pixels, ids, labels, *masks])
            grads = engine.gradients()
            if not np.isfinite(loss) or any(not np.isfinite(g).all() for g in grads.values()):
                engine.discard()
                bad += 1
                continue
            engine.step()
            losses.append(loss)
        trained = self.layout.slice_params(engine.parameters(), ranks)
        return FitResult(trained, ranks, len(examples), losses, bad, time.perf_counter() - start)

    def accuracy(self, sliced: dict[str, np.ndarray], ranks: Ranks, examples: Sequence[VQAExample]) -> float:
        """Exact-match accuracy of the adapter ``sliced`` at ``ranks`` on ``examples``."""
        if self._eval_engine is None:  # evaluation keeps no optimiser state: one engine serves every call
            self._eval_engine = make_engine(self.bundle, self.lr)
        engine = self._eval_engine
        engine.set_parameters(self.full(sliced, ranks))
        masks = self.bundle.schedule.input_masks(ranks)
        b = self._encoder.batch_size
        correct = 0
        for begin in range(0, len(examples), b):
            chunk = list(examples[begin : begin + b])
            real = len(chunk)
            chunk += [chunk[-1]] * (b - real)  # the batch size is fixed at export
            pixels, ids, labels = self._encoder.batch(chunk)
            _, logits = engine.evaluate([pixels, ids, labels, *masks])
            correct += int(correct_answers(logits, labels, self._encoder.ids.ignore_index)[:real].sum())
        return correct / len(examples)

    def initial(self) -> dict[str, np.ndarray]:
        """The bundle's own initial adapter tensors (LoRA init: random ``A``, zero ``B``)."""
        engine = make_engine(self.bundle, self.lr)
        if hasattr(engine, "ensure_parameters"):  # ExecuTorch hands out its weights after one run
            pixels, ids, labels = self._encoder.batch([self._probe()] * self._encoder.batch_size)
            engine.ensure_parameters([pixels, ids, labels, *self.bundle.schedule.phase_masks(0)])
        return {k: np.array(v, dtype=np.float32) for k, v in engine.parameters().items()}

    @staticmethod
    def _probe() -> VQAExample:
        from mobile_peft.core.digits import load_digits_task

        return load_digits_task("digit-name", "train", limit=1)[0]
