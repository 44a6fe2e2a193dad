"""User data sets on disk, and :func:`load_dataset`, the one entry point for any data spec string
(``finetune``, ``plan``, ``train`` and ``eval`` all read data through it, so they give the same
messages).

A folder data set looks like::

    my_data/
      annotations.jsonl     one JSON object per line (UTF-8):
                            {"image": "cat.png", "question": "what animal is this ?", "answer": "cat"}
      images/cat.png

``image`` is relative to the folder or to its ``images/`` subfolder. Extra keys are ignored.
The files are untrusted input (photos from a camera, lines from a user's tool), so every line is
checked before anything is returned: JSON, the three keys as non-empty strings of at most
:data:`MAX_TEXT_CHARS` characters, UTF-8 text, an image path that stays inside the folder (no
``..``, no absolute path, no link out), and an image that decodes completely, in a format PIL
knows, with at most :data:`MAX_IMAGE_PIXELS` pixels (decompression bombs are refused from the
header, before decoding). All problems are reported together in one
:class:`~mobile_peft.core.errors.DataError` naming the file and line -- or, with ``skip_bad=True``,
the bad lines are left out and listed in ``skipped`` (an empty result is still an error).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .digits import DEFAULT_DIGIT_TASK, DIGIT_TASKS, load_digits_task
from .errors import DataError
from .examples import VQAExample

__all__ = ["ANNOTATIONS_FILE", "IMAGES_DIR", "MAX_IMAGE_PIXELS", "MAX_TEXT_CHARS", "load_dataset", "load_folder"]

ANNOTATIONS_FILE = "annotations.jsonl"
IMAGES_DIR = "images"
DIGITS = "digits"
MAX_IMAGE_PIXELS = 50_000_000  # a 48-megapixel phone photo fits; a decompression bomb does not
MAX_TEXT_CHARS = 1000
_REQUIRED_KEYS = ("image", "question", "answer")
_MAX_LISTED_PROBLEMS = 50
_EXPECTED_LINE = '{"image": "images/x.png", "question": "...", "answer": "..."}'


def _read_image(path: Path) -> np.ndarray:
    """uint8 [H, W] for grey files, uint8 [H, W, 3] for everything else; DataError when the file
    is not a complete image PIL can decode, or has more than MAX_IMAGE_PIXELS pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {str(path)!r} has {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}; resize it")
            img.load()  # decode everything now: a truncated file fails here, not mid-training
            img = img.convert("L") if img.mode in ("1", "L", "LA") else img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise DataError(f"{str(path)!r} is not an image file PIL can read (PNG, JPEG, ...)") from None
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types for truncated or damaged files
        raise DataError(f"cannot decode image {str(path)!r} ({type(exc).__name__}: {exc})") from None


def _check_line(line: str) -> tuple[dict | None, list[str]]:
    """The parsed record, or None and what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, [f"invalid JSON ({exc.msg} at column {exc.colno})"]
    except RecursionError:
        return None, ["invalid JSON (nested too deeply)"]
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    for key in _REQUIRED_KEYS:
        if key not in record:
            problems.append(f"missing key {key!r}")
        elif not isinstance(record[key], str):
            problems.append(f"{key!r} must be a string, got {type(record[key]).__name__} {str(record[key])[:40]!r}")
        elif not record[key].strip():
            problems.append(f"{key!r} is empty")
        elif len(record[key]) > MAX_TEXT_CHARS:
            problems.append(f"{key!r} has {len(record[key]):,} characters, over the limit of {MAX_TEXT_CHARS:,}")
    return (None if problems else record), problems


def _resolve_image(folder: Path, name: str) -> tuple[Path | None, str | None]:
    """The image file inside ``folder`` (or its images/), or None and why not."""
    if Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
        return None, f"image path {name!r} leaves the data folder; give a path relative to {folder}"
    root = folder.resolve()
    for candidate in (folder / name, folder / IMAGES_DIR / name):
        if candidate.is_file():
            if not candidate.resolve().is_relative_to(root):
                return None, f"image {name!r} is a link to {candidate.resolve()}, outside the data folder"
            return candidate, None
    return None, f"image file {name!r} not found (looked in {folder} and {folder / IMAGES_DIR})"


def _lines(annotations: Path) -> list[tuple[int, str | None]]:
    """(line number, text) per non-blank line; text None for a line that is not UTF-8."""
    try:
        data = annotations.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {annotations} ({exc.strerror or exc})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    out = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((number, None))
            continue
        if text.strip():
            out.append((number, text))
    return out


def _read_folder(folder: Path, skip_bad: bool = False, skipped: list[str] | None = None) -> list[tuple[Path, VQAExample]]:
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
    cache: dict[Path, np.ndarray | DataError] = {}  # VQA sets often ask several questions about one image
    for number, line in _lines(annotations):
        if line is None:
            record, line_problems = None, ["not UTF-8 text; save the file as UTF-8"]
        else:
            record, line_problems = _check_line(line)
        if record is not None:
            path, why = _resolve_image(folder, record["image"])
            if path is None:
                line_problems.append(why)
            else:
                if path not in cache:
                    try:
                        cache[path] = _read_image(path)
                    except DataError as exc:
                        cache[path] = exc
                if isinstance(cache[path], DataError):
                    line_problems.append(str(cache[path]))
            if not line_problems:
                source = f"{annotations}:{number}"
                pairs.append((path, VQAExample(cache[path], record["question"], record["answer"], source)))
        problems.extend(f"line {number}: {p}" for p in line_problems)

    if problems and skip_bad:
        if skipped is not None:
            skipped.extend(f"{annotations}:{p.removeprefix('line ')}" for p in problems)
        problems = []
    if problems:
        listed = problems[:_MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise DataError(
            f"{annotations} has {len(problems)} problem(s):\n  "
            + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
            + f"\nEach line must be a JSON object like {_EXPECTED_LINE} with non-empty strings, the image "
            f"relative to {folder} or to its {IMAGES_DIR}/ folder. Fix these lines and retry "
            "(or pass --skip-bad to leave them out)."
        )
    if not pairs:
        raise DataError(
            f"{annotations} has no usable examples; add one JSON line per example like {_EXPECTED_LINE}."
        )
    return pairs


def load_folder(
    folder: str | Path,
    split: str = "all",
    seed: int = 0,
    eval_fraction: float = 0.2,
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> list[VQAExample]:
    """Examples of a folder data set: ``"all"`` of them, or its ``"train"`` or ``"eval"`` side.

    The split is by image, not by line, so questions about one image never straddle train and
    eval; it is a seeded random permutation of the distinct images, in file order otherwise.
    """
    if split not in ("all", "train", "eval"):
        raise DataError(f"split={split!r}; expected 'all', 'train' or 'eval'.")
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction={eval_fraction!r} must be strictly between 0 and 1, e.g. 0.2.")
    pairs = _read_folder(Path(folder), skip_bad, skipped)
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
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> list[VQAExample]:
    """Examples named by a data spec string: ``"digits"``, ``"digits:<task>"`` or a folder path.

    ``split`` is ``"train"`` or ``"eval"``; the split is deterministic in ``seed``. With
    ``skip_bad`` a folder's bad lines are left out instead of failing, each appended to
    ``skipped`` as ``"<file>:<line>: <problem>"``.
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
        return load_folder(spec, split, seed=seed, eval_fraction=eval_fraction, skip_bad=skip_bad, skipped=skipped)[:limit]
    raise DataError(
        f"data spec {spec!r} is not a known data set nor an existing folder; expected {_options()}."
    )
