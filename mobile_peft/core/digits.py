"""The embedded data set: visual question answering over scikit-learn's handwritten digits.

``sklearn.datasets.load_digits`` ships with scikit-learn (no download): 1,797 grey 8x8 images
with values 0..16, scaled here to 0..1. Each *task* is a small strategy object in
:data:`DIGIT_TASKS` that owns its question paraphrases, its answer function and an optional image
transform, so adding a task is one class and one registration, never another branch.

``digit-name`` is the base model's pre-training task; the others are fine-tuning targets: new
label mappings (``parity``, ``next-digit``, ``greater-than-four``) and shifted visual domains
(``rotated``, ``thick``, ``inverted``).

Every task uses the same stratified train/eval split of the 1,797 images for a given seed, so the
``train`` images of one task never appear in the ``eval`` split of another.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import DataError, RegistryError
from .examples import VQAExample
from .registry import Registry

__all__ = [
    "DEFAULT_DIGIT_TASK",
    "DIGIT_NAMES",
    "DIGIT_TASKS",
    "DigitTask",
    "digit_vocabulary",
    "load_digits_task",
]

DIGIT_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
DEFAULT_DIGIT_TASK = "digit-name"  # the base model's pre-training task
_DIGITS_MAX = 16.0  # load_digits pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap)


class DigitTask:
    """A digits VQA task: question paraphrases, an answer per digit, an optional image transform.

    The paraphrase of an example is chosen by its index in the full 1,797-image set, so it is the
    same whichever split, seed or limit selects the example.
    """

    name: str = ""
    questions: tuple[str, ...] = ()

    def answer(self, digit: int) -> str:
        raise NotImplementedError

    def transform(self, image: np.ndarray) -> np.ndarray:
        """[8, 8] float in 0..1 -> [8, 8] float in 0..1. Identity unless the domain is shifted."""
        return image

    def question(self, index: int) -> str:
        return self.questions[index % len(self.questions)]

    def answers(self) -> set[str]:
        return {self.answer(d) for d in range(10)}


DIGIT_TASKS: Registry[DigitTask] = Registry("digit task")


def _register(cls: type[DigitTask]) -> type[DigitTask]:
    DIGIT_TASKS.register(cls.name)(cls())
    return cls


@_register
class DigitName(DigitTask):
    name = "digit-name"
    questions = ("what digit is shown ?", "which digit is this ?", "what number is in the image ?")

    def answer(self, digit: int) -> str:
        return DIGIT_NAMES[digit]


@_register
class Parity(DigitTask):
    name = "parity"
    questions = ("is this digit even or odd ?", "is the digit odd or even ?", "is this number even or odd ?")

    def answer(self, digit: int) -> str:
        return ("even", "odd")[digit % 2]


@_register
class NextDigit(DigitTask):
    name = "next-digit"
    questions = (
        "which digit comes after this one ?",
        "what digit follows this one ?",
        "what is the next digit ?",
    )

    def answer(self, digit: int) -> str:
        return DIGIT_NAMES[(digit + 1) % 10]


@_register
class GreaterThanFour(DigitTask):
    name = "greater-than-four"
    questions = (
        "is this digit greater than four ?",
        "is the digit bigger than four ?",
        "is this number more than four ?",
    )

    def answer(self, digit: int) -> str:
        return "yes" if digit > 4 else "no"


@_register
class Rotated(DigitName):
    """Digit names on images rotated 90 degrees counter-clockwise."""

    name = "rotated"

    def transform(self, image: np.ndarray) -> np.ndarray:
        return np.rot90(image).copy()


@_register
class Thick(DigitName):
    """Digit names on strokes thickened by a grey dilation with a 2x2 max filter."""

    name = "thick"

    def transform(self, image: np.ndarray) -> np.ndarray:
        # Max over each pixel and its right, lower and lower-right neighbours (zero beyond the edge).
        p = np.pad(image, ((0, 1), (0, 1)))
        dilated = np.maximum.reduce([p[:-1, :-1], p[1:, :-1], p[:-1, 1:], p[1:, 1:]])
        return np.clip(dilated, 0.0, 1.0)


@_register
class Inverted(DigitName):
    """Digit names on intensity-inverted images (dark strokes on a light background)."""

    name = "inverted"

    def transform(self, image: np.ndarray) -> np.ndarray:
        return 1.0 - image


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """([1797, 8, 8] float32 in 0..1, [1797] int64 labels), read-only so the cache stays intact."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / _DIGITS_MAX).astype(np.float32)
    targets = bunch.target.astype(np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


@functools.lru_cache(maxsize=8)
def _split_indices(seed: int, eval_fraction: float) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, targets = _digits()
    train, eval_ = train_test_split(
        np.arange(len(targets)), test_size=eval_fraction, stratify=targets, random_state=seed
    )
    return {"train": train, "eval": eval_}


def load_digits_task(
    name: str,
    split: str,
    seed: int = 0,
    eval_fraction: float = 0.2,
    limit: int | None = None,
) -> list[VQAExample]:
    """Examples of task ``name`` on the ``"train"`` or ``"eval"`` side of the shared split.

    The split is stratified by digit and depends only on ``seed`` and ``eval_fraction``; its order
    is shuffled (deterministically), so ``limit`` keeps a class-balanced-ish prefix.
    Images are [8, 8] float32 in 0..1 after the task's transform.
    """
    try:
        task = DIGIT_TASKS[name]
    except RegistryError as exc:
        raise DataError(str(exc)) from None
    if split not in ("train", "eval"):
        raise DataError(f"split={split!r} is not a digits split; expected 'train' or 'eval'.")
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction={eval_fraction!r} must be strictly between 0 and 1, e.g. 0.2.")
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit!r} must be a positive number of examples, or None for all.")

    images, targets = _digits()
    indices = _split_indices(int(seed), float(eval_fraction))[split][:limit]
    return [
        VQAExample(
            image=task.transform(images[i]),
            question=task.question(int(i)),
            answer=task.answer(int(targets[i])),
        )
        for i in indices
    ]


def digit_vocabulary() -> set[str]:
    """Every word any digits task may put in a question or an answer (space-separated in the templates)."""
    words: set[str] = set()
    for name in DIGIT_TASKS:
        task = DIGIT_TASKS[name]
        for text in (*task.questions, *task.answers()):
            words.update(text.split())
    return words
