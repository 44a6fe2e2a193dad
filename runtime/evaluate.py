"""Accuracy of a bundle (optionally with a personal adapter) with the bundle's eval method.

An answer counts as correct when every labelled token (the answer and its ``<eos>``) is the
argmax of the logits one position earlier: with teacher forcing this equals exact match under
greedy decoding (the authoring layer's ``correct_answers``). The batch size is fixed at export,
so the last batch is padded by repeating its last example; padded rows are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.core.adapter_files import ADAPTER_CONFIG_NAME
from mobile_peft.core.contract import IGNORE_INDEX
from mobile_peft.core.datasets import load_dataset
from mobile_peft.core.errors import CheckpointError

from .adapter import read_adapter
from .bundle import Bundle
from .checkpoint import latest_checkpoint, load_checkpoint
from .engine import make_engine, trained_parameters

__all__ = ["EvalReport", "correct_answers", "evaluate_bundle"]


@dataclass
class EvalReport:
    accuracy: float
    loss: float
    examples: int
    adapter: str | None
    skipped: list[str] = field(default_factory=list)  # data lines left out by skip_bad

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "examples": self.examples,
            "adapter": self.adapter,
            "skipped": self.skipped,
        }


def correct_answers(logits: np.ndarray, labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``[B]`` bool: every labelled ``labels[:, t + 1]`` is ``argmax logits[:, t]``."""
    pred = logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    return ((pred == target) | (target == ignore_index)).all(axis=1)


def _trained_state(bundle: Bundle, directory: Path) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The personal adapter in ``directory`` or, when a run wrote none (a bundle without adapter
    scales, a run still in progress), its newest checkpoint's tensors and masks."""
    if (directory / ADAPTER_CONFIG_NAME).is_file():
        return read_adapter(bundle, directory)
    last = latest_checkpoint(directory)
    if last is None:
        raise CheckpointError(
            f"{directory} holds neither {ADAPTER_CONFIG_NAME} nor checkpoints; pass a `mobile-peft train --out` directory."
        )
    tensors, meta = load_checkpoint(last)
    return trained_parameters(tensors), [np.asarray(m, dtype=np.float32) for m in meta["masks"]]


def evaluate_bundle(
    bundle: str | Path | Bundle,
    data: str = "digits",
    adapter: str | Path | None = None,
    split: str = "eval",
    seed: int = 0,
    limit: int | None = None,
    skip_bad: bool = False,
) -> EvalReport:
    """Accuracy and mean loss over ``data``'s ``split`` at the bundle's initial adapter tensors and
    first-phase masks, or at the adapter saved in ``adapter`` (a run directory)."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    engine = make_engine(bundle)
    masks = bundle.schedule.phase_masks(0)
    if adapter is not None:
        params, masks = _trained_state(bundle, Path(adapter))
        engine.set_parameters(params)
    encoder = bundle.encoder()
    skipped: list[str] = []
    examples = load_dataset(data, split, seed=seed, limit=limit, skip_bad=skip_bad, skipped=skipped)
    b = encoder.batch_size
    correct, losses, weights = 0, [], []
    for start in range(0, len(examples), b):
        chunk = examples[start : start + b]
        real = len(chunk)
        chunk = chunk + [chunk[-1]] * (b - real)
        pixels, ids, labels = encoder.batch(chunk)
        loss, logits = engine.evaluate([pixels, ids, labels, *masks])
        correct += int(correct_answers(logits, labels, encoder.ids.ignore_index)[:real].sum())
        losses.append(loss)
        weights.append(real)
    return EvalReport(
        correct / len(examples),
        float(np.average(losses, weights=weights)),
        len(examples),
        str(adapter) if adapter is not None else None,
        skipped,
    )
