"""User data sets on disk, and :func:`load_dataset`, the one entry point for any data spec string.

A folder data set looks like::

    my_data/
      annotations.jsonl     one JSON object per line:
                            {"image": "cat.png", "question": "what animal is this ?", "answer": "cat"}
      images/cat.png

``image`` is relative to the folder or to its ``images/`` subfolder. Extra keys are ignored.
Every line is checked before anything is returned, and all problems are reported together in one
:class:`~mobile_peft.errors.DataError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .digits import DEFAULT_DIGIT_TASK, DIGIT_TASKS, load_digits_task
from .errors import DataError
from .examples import VQAExample

__all__ = ["ANNOTATIONS_FILE", "IMAGES_DIR", "load_dataset", "load_folder"]

ANNOTATIONS_FILE = "annotations.jsonl"
IMAGES_DIR = "images"
DIGITS = "digits"
_REQUIRED_KEYS = ("image", "question", "answer")
_MAX_LISTED_PROBLEMS = 50
_EXPECTED_LINE = '{"image": "images/x.png", "question": "...", "answer": "..."}'


def _read_image(path: Path) -> np.ndarray:
    """uint8 [H, W] for grey files, uint8 [H, W, 3] for everything else."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L") if img.mode in ("1", "L", "LA") else img.convert("RGB")
        return np.asarray(img, dtype=np.uint8).copy()


def _check_line(line: str) -> tuple[dict | None, list[str]]:
    """The parsed record, or None and what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, [f"invalid JSON ({exc.msg} at column {exc.colno})"]
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    for key in _REQUIRED_KEYS:
        if key not in record:
            problems.append(f"missing key {key!r}")
        elif not isinstance(record[key], str):
            problems.append(f"{key!r} must be a string, got {type(record[key]).__name__} {record[key]!r}")
        elif not record[key].strip():
            problems.append(f"{key!r} is empty")
    return (None if problems else record), problems


def _resolve_image(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / IMAGES_DIR / name):
        if candidate.is_file():
            return candidate
    return None


def _read_folder(folder: Path) -> list[tuple[Path, VQAExample]]:
    """All (image path, example) pairs of a folder data set, or one DataError listing every problem."""
    annotations = folder / ANNOTATIONS_FILE
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; expected a folder with {ANNOTATIONS_FILE}.")
    if not annotations.is_file():
        raise DataError(
            f"{folder} has no {ANNOTATIONS_FILE}; add one with a line per example like {_EXPECTED_LINE}."
        )

    problems: list[str] = []
    pairs: list[tuple[Path, VQAExample]] = []
    cache: dict[Path, np.ndarray] = {}  # VQA sets often ask several questions about one image
    try:
        text = annotations.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{annotations} is not UTF-8 text ({exc}); save it as UTF-8 JSON lines.") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record, line_problems = _check_line(line)
        if record is not None:
            path = _resolve_image(folder, record["image"])
            if path is None:
                line_problems.append(
                    f"image file {record['image']!r} not found (looked in {folder} and {folder / IMAGES_DIR})"
                )
            elif path not in cache:
                try:
                    cache[path] = _read_image(path)
                except Exception as exc:  # PIL raises many types for broken files
                    line_problems.append(f"cannot read image {str(path)!r} ({type(exc).__name__}: {exc})")
            if not line_problems:
                pairs.append((path, VQAExample(cache[path], record["question"], record["answer"])))
        problems.extend(f"line {number}: {p}" for p in line_problems)

    if problems:
        listed = problems[:_MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise DataError(
            f"{annotations} has {len(problems)} problem(s):\n  "
            + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
            + f"\nEach line must be a JSON object like {_EXPECTED_LINE} with non-empty strings, the image "
            f"relative to {folder} or to its {IMAGES_DIR}/ folder. Fix these lines and retry."
        )
    if not pairs:
        raise DataError(
            f"{annotations} has no examples; add one JSON line per example like {_EXPECTED_LINE}."
        )
    return pairs


def load_folder(
    folder: str | Path,
    split: str = "all",
    seed: int = 0,
    eval_fraction: float = 0.2,
) -> list[VQAExample]:
    """Examples of a folder data set: ``"all"`` of them, or its ``"train"`` or ``"eval"`` side.

    The split is by image, not by line, so questions about one image never straddle train and
    eval; it is a seeded random permutation of the distinct images, in file order otherwise.
    """
    if split not in ("all", "train", "eval"):
        raise DataError(f"split={split!r}; expected 'all', 'train' or 'eval'.")
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction={eval_fraction!r} must be strictly between 0 and 1, e.g. 0.2.")
    pairs = _read_folder(Path(folder))
    if split == "all":
        return [ex for _, ex in pairs]

    images = list(dict.fromkeys(path for path, _ in pairs))  # distinct, first-seen order
    if len(images) < 2:
        raise DataError(
            f"{folder} has {len(images)} distinct image(s); a train/eval split needs at least 2. "
            "Add images, or load it with split='all'."
        )
    n_eval = min(max(1, round(len(images) * eval_fraction)), len(images) - 1)
    order = np.random.default_rng(seed).permutation(len(images))
    eval_images = {images[i] for i in order[:n_eval]}
    return [ex for path, ex in pairs if (path in eval_images) == (split == "eval")]


def _options() -> str:
    return (
        f"'{DIGITS}' (task {DEFAULT_DIGIT_TASK}), '{DIGITS}:<task>' with <task> one of "
        f"{', '.join(DIGIT_TASKS.names())}, or a path to a folder holding {ANNOTATIONS_FILE} and {IMAGES_DIR}/"
    )


def load_dataset(
    spec: str,
    split: str,
    seed: int = 0,
    eval_fraction: float = 0.2,
    limit: int | None = None,
) -> list[VQAExample]:
    """Examples named by a data spec string: ``"digits"``, ``"digits:<task>"`` or a folder path.

    ``split`` is ``"train"`` or ``"eval"``; the split is deterministic in ``seed``.
    """
    if split not in ("train", "eval"):
        raise DataError(f"split={split!r}; expected 'train' or 'eval'.")
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit!r} must be a positive number of examples, or None for all.")
    name, sep, task = spec.partition(":")
    if name == DIGITS:
        task = task if sep else DEFAULT_DIGIT_TASK
        if task not in DIGIT_TASKS:
            raise DataError(f"unknown digits task {task!r} in data spec {spec!r}; expected {_options()}.")
        return load_digits_task(task, split, seed=seed, eval_fraction=eval_fraction, limit=limit)
    if Path(spec).is_dir():
        return load_folder(spec, split, seed=seed, eval_fraction=eval_fraction)[:limit]
    raise DataError(
        f"data spec {spec!r} is not a known data set nor an existing folder; expected {_options()}."
    )
