"""Input tensors exactly as a bundle's manifest ``input_spec`` says, in numpy, plus a data stream
whose position (epoch, index, seed) is explicit so a resumed run sees the very same batches.

What a phone does with one example (the authoring layer's :mod:`mobile_peft.data.encode`, without
torch)::

    image  [H, W] grey | [H, W, 3] RGB, uint8 0..255 or float 0..1
        -> bilinear resize to [S, S] (align_corners=False, no antialias) -> grey to 3 channels
        -> (x - image_mean) / image_std                                    pixel_values [3, S, S] f32
    text   input_ids: <bos> tok(prompt_template.format(question=q)) tok(answer) <eos> <pad>...  [T] i64
           labels:    -100 ...                                     tok(answer) <eos> -100 ...   [T] i64

The embedded ``digits`` data (scikit-learn's 8x8 handwritten digits) mirrors the task table of
:mod:`mobile_peft.data.digits`, which the runtime must not import (its package imports torch);
``tests/runtime/test_data.py`` checks both agree example by example.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.errors import DataError

__all__ = [
    "DIGIT_TASKS",
    "DataStream",
    "Encoder",
    "Example",
    "StreamPosition",
    "bilinear_resize",
    "encode_image",
    "load_examples",
]

IGNORE_INDEX = -100
_FLOAT_SLACK = 1e-3
_DIGITS_MAX = 16.0


@dataclass(frozen=True, eq=False)
class Example:
    """One (image, question, answer) triple, as the authoring layer's ``VQAExample``."""

    image: np.ndarray
    question: str
    answer: str


# -- image -----------------------------------------------------------------------------------------
def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right source indices and the right weight for each output position, as PyTorch's
    ``area_pixel_compute_source_index`` (align_corners=False): ``src = (i + 0.5) * in/out - 0.5``,
    clamped at 0, computed in float32 like its CPU kernel."""
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)


def bilinear_resize(x: np.ndarray, size: int) -> np.ndarray:
    """``[C, H, W]`` float32 -> ``[C, size, size]``, as ``F.interpolate(mode="bilinear",
    align_corners=False, antialias=False)``."""
    _, h, w = x.shape
    y0, y1, wy = _source_index(size, h)
    x0, x1, wx = _source_index(size, w)
    top = x[:, y0, :] * (np.float32(1) - wy)[None, :, None] + x[:, y1, :] * wy[None, :, None]
    return (top[:, :, x0] * (np.float32(1) - wx)[None, None, :] + top[:, :, x1] * wx[None, None, :]).astype(np.float32)


def encode_image(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Image -> normalised float32 ``[3, size, size]`` (see the module docstring)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)) or 0 in image.shape:
        raise DataError(f"image has shape {image.shape}; expected [H, W] (grey) or [H, W, 3] (RGB).")
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(image.dtype, np.floating):
        lo, hi = float(image.min()), float(image.max())
        if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK or not np.isfinite([lo, hi]).all():
            raise DataError(f"float image has values in [{lo:g}, {hi:g}]; expected 0..1.")
        x = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise DataError(f"image dtype {image.dtype} is not supported; expected uint8 (0..255) or float (0..1).")
    x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
    if x.shape[1:] != (size, size):
        x = bilinear_resize(x, size)
    x = np.broadcast_to(x, (3, size, size))
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


# -- text ------------------------------------------------------------------------------------------
class Encoder:
    """Builds a batch's inputs from the manifest's ``input_spec`` and the bundled tokeniser."""

    def __init__(self, input_spec: dict[str, Any], tokenizer_path: str | Path) -> None:
        from tokenizers import Tokenizer

        self.spec = input_spec
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        ids = input_spec.get("token_ids") or {
            k: self.tokenizer.token_to_id(input_spec.get(f"{k}_token", f"<{k}>")) for k in ("pad", "bos", "eos")
        }
        if any(ids.get(k) is None for k in ("pad", "bos", "eos")):
            raise DataError(f"the bundle's input_spec gives no pad/bos/eos token ids ({ids}); re-export the bundle.")
        self.pad_id, self.bos_id, self.eos_id = (int(ids[k]) for k in ("pad", "bos", "eos"))
        self.ignore_index = int(ids.get("ignore_index", IGNORE_INDEX))
        self.max_text_len = int(input_spec["max_text_len"])
        self.image_size = int(input_spec["image_size"])
        self.lowercase = bool(input_spec.get("lowercase", True))
        self.batch_size = int(input_spec["batch_size"])

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def text(self, question: str, answer: str) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels), int64 ``[max_text_len]``."""
        if self.lowercase:
            question, answer = question.lower(), answer.lower()
        prompt = self._tokens(self.spec["prompt_template"].format(question=question))
        answer_ids = self._tokens(answer)
        if not answer_ids:
            raise DataError(f"answer {answer!r} (question {question!r}) encodes to no tokens.")
        ids = [self.bos_id, *prompt, *answer_ids, self.eos_id]
        if len(ids) > self.max_text_len:
            raise DataError(
                f"question {question!r} with answer {answer!r} needs {len(ids)} tokens but the bundle's "
                f"max_text_len is {self.max_text_len}; shorten the text (the sequence length is fixed at export)."
            )
        labels = [self.ignore_index] * (1 + len(prompt)) + answer_ids + [self.eos_id]
        pad = self.max_text_len - len(ids)
        return (np.asarray(ids + [self.pad_id] * pad, dtype=np.int64),
                np.asarray(labels + [self.ignore_index] * pad, dtype=np.int64))

    def image(self, image: np.ndarray) -> np.ndarray:
        return encode_image(image, self.image_size, self.spec["image_mean"], self.spec["image_std"])

    def batch(self, examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``pixel_values [B, 3, S, S] f32, input_ids [B, T] i64, labels [B, T] i64``."""
        text = [self.text(e.question, e.answer) for e in examples]
        return (np.stack([self.image(e.image) for e in examples]),
                np.stack([t[0] for t in text]), np.stack([t[1] for t in text]))


# -- the embedded digits tasks (mirror of mobile_peft.data.digits) ---------------------------------
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _thick(image: np.ndarray) -> np.ndarray:
    p = np.pad(image, ((0, 1), (0, 1)))
    return np.clip(np.maximum.reduce([p[:-1, :-1], p[1:, :-1], p[:-1, 1:], p[1:, 1:]]), 0.0, 1.0)


@dataclass(frozen=True)
class DigitTask:
    questions: tuple[str, ...]
    answer: Callable[[int], str]
    transform: Callable[[np.ndarray], np.ndarray] = lambda image: image


_NAME_QUESTIONS = ("what digit is shown ?", "which digit is this ?", "what number is in the image ?")
DIGIT_TASKS: dict[str, DigitTask] = {
    "digit-name": DigitTask(_NAME_QUESTIONS, lambda d: DIGIT_NAMES[d]),
    "parity": DigitTask(
        ("is this digit even or odd ?", "is the digit odd or even ?", "is this number even or odd ?"),
        lambda d: ("even", "odd")[d % 2],
    ),
    "next-digit": DigitTask(
        ("which digit comes after this one ?", "what digit follows this one ?", "what is the next digit ?"),
        lambda d: DIGIT_NAMES[(d + 1) % 10],
    ),
    "greater-than-four": DigitTask(
        ("is this digit greater than four ?", "is the digit bigger than four ?", "is this number more than four ?"),
        lambda d: "yes" if d > 4 else "no",
    ),
    "rotated": DigitTask(_NAME_QUESTIONS, lambda d: DIGIT_NAMES[d], lambda im: np.rot90(im).copy()),
    "thick": DigitTask(_NAME_QUESTIONS, lambda d: DIGIT_NAMES[d], _thick),
    "inverted": DigitTask(_NAME_QUESTIONS, lambda d: DIGIT_NAMES[d], lambda im: 1.0 - im),
}
DEFAULT_DIGIT_TASK = "digit-name"


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / _DIGITS_MAX).astype(np.float32), bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _split(seed: int, eval_fraction: float) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, targets = _digits()
    train, eval_ = train_test_split(np.arange(len(targets)), test_size=eval_fraction, stratify=targets, random_state=seed)
    return {"train": train, "eval": eval_}


def _digit_examples(task_name: str, split: str, seed: int, limit: int | None) -> list[Example]:
    if task_name not in DIGIT_TASKS:
        raise DataError(f"unknown digits task {task_name!r}; expected one of {sorted(DIGIT_TASKS)}.")
    task = DIGIT_TASKS[task_name]
    images, targets = _digits()
    indices = _split(int(seed), 0.2)[split][:limit]
    return [Example(task.transform(images[i]), task.questions[int(i) % len(task.questions)], task.answer(int(targets[i])))
            for i in indices]


def _folder_examples(folder: Path, split: str, seed: int, limit: int | None) -> list[Example]:
    """A folder with ``annotations.jsonl`` (+ ``images/``), split by image as the authoring layer's
    ``load_folder``: a seeded permutation of the distinct images, 20% of them (at least one) eval."""
    from PIL import Image

    lines = [json.loads(line) for line in (folder / "annotations.jsonl").read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    paths = [folder / r["image"] if (folder / r["image"]).is_file() else folder / "images" / r["image"] for r in lines]
    missing = sorted({str(p) for p in paths if not p.is_file()})
    if missing:
        raise DataError(f"{folder / 'annotations.jsonl'} names images that do not exist: {missing[:5]}.")
    images = list(dict.fromkeys(paths))
    if len(images) < 2:
        raise DataError(f"{folder} has {len(images)} distinct image(s); a train/eval split needs at least 2.")
    n_eval = min(max(1, round(len(images) * 0.2)), len(images) - 1)
    eval_images = {images[i] for i in np.random.default_rng(seed).permutation(len(images))[:n_eval]}
    out, cache = [], {}
    for path, rec in zip(paths, lines):
        if (path in eval_images) != (split == "eval"):
            continue
        if path not in cache:
            with Image.open(path) as img:
                img = img.convert("L") if img.mode in ("1", "L", "LA") else img.convert("RGB")
                cache[path] = np.asarray(img, dtype=np.uint8).copy()
        out.append(Example(cache[path], rec["question"], rec["answer"]))
    return out[:limit]


def load_examples(data: str, split: str, seed: int = 0, limit: int | None = None) -> list[Example]:
    """``digits``, ``digits:<task>`` or a folder with ``annotations.jsonl``; split ``train``/``eval``."""
    if split not in ("train", "eval"):
        raise DataError(f"split={split!r}; expected 'train' or 'eval'.")
    if data == "digits" or data.startswith("digits:"):
        task = data.partition(":")[2] or DEFAULT_DIGIT_TASK
        return _digit_examples(task, split, seed, limit)
    folder = Path(data)
    if not (folder / "annotations.jsonl").is_file():
        raise DataError(f"--data {data!r} is neither 'digits[:task]' nor a folder with annotations.jsonl.")
    return _folder_examples(folder, split, seed, limit)


# -- the stream ------------------------------------------------------------------------------------
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

    def __init__(self, examples: Sequence[Example], encoder: Encoder, position: StreamPosition | None = None) -> None:
        if not examples:
            raise DataError("the training data has no examples.")
        self.examples = list(examples)
        self.encoder = encoder
        self.position = position or StreamPosition()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.position.seed, epoch]).permutation(len(self.examples))

    def _encoded(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if i not in self._cache:
            e = self.examples[i]
            self._cache[i] = (self.encoder.image(e.image), *self.encoder.text(e.question, e.answer))
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
