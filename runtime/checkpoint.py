"""Crash-safe checkpoints: a run killed at any moment resumes from a complete checkpoint.

Layout under ``RUN_DIR/checkpoints/``::

    ckpt-00000012/            one complete checkpoint (step 12)
      state.safetensors       adapter tensors ("param/<name>") + optimizer state ("<kind>/<name>")
      meta.json               step, data position, active ranks/masks, losses, events, RNG seed
      ...                     format extras (e.g. the ONNX Runtime checkpoint)
    .tmp-00000015-<pid>/      a checkpoint being written (ignored, removed on the next save)

Atomicity: every file is written into the temporary directory and fsync'ed, the directory is
fsync'ed, then renamed to ``ckpt-<step>`` (``rename`` is atomic on POSIX) and the parent fsync'ed.
A SIGKILL before the rename leaves only a ``.tmp-`` directory, after it a complete checkpoint:
there is never a half-written ``ckpt-``. The newest ``keep`` checkpoints are kept; older ones are
renamed to ``.tmp-`` before they are deleted, so there is never a half-deleted ``ckpt-`` either
(the fault-injection campaign found one before this rule).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.core.errors import CheckpointError

__all__ = ["CHECKPOINT_DIR", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "ckpt-"
_TMP = ".tmp-"
STATE_FILE = "state.safetensors"
META_FILE = "meta.json"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    tensors: dict[str, np.ndarray],
    meta: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically and return its directory; ``extra(tmp_dir)`` may add
    format-specific files before the rename. A failed write (disk full, read-only storage) leaves
    every earlier checkpoint as it was and raises :class:`CheckpointError` saying what happened."""
    root = Path(run_dir) / CHECKPOINT_DIR
    tmp = root / f"{_TMP}{step:08d}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(_TMP + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        return _write(root, tmp, step, tensors, meta, extra, keep)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})" if exc.errno else str(exc)
        last = latest_checkpoint(run_dir) if root.is_dir() else None
        kept = f"the previous checkpoint {last} is intact" if last else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write the checkpoint of step {step} under {root}: {reason}; {kept}. "
            "Free some space or choose a writable --out, then resume with --resume."
        ) from None


def _write(root: Path, tmp: Path, step: int, tensors: dict[str, np.ndarray], meta: dict[str, Any],
           extra: Callable[[Path], None] | None, keep: int) -> Path:
    from safetensors.numpy import save_file

    tmp.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / STATE_FILE))
    (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=1) + "\n")
    if extra is not None:
        extra(tmp)
    for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
        _fsync_path(file)
    _fsync_path(tmp)
    final = root / f"{_PREFIX}{step:08d}"
    if final.exists():  # the same step saved again (a resumed run re-reaching it): set the old one aside first
        aside = _set_aside(root, final)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_path(root)
    for old in sorted(root.glob(_PREFIX + "*"))[:-keep]:
        shutil.rmtree(_set_aside(root, old), ignore_errors=True)
    return final


def _set_aside(root: Path, checkpoint: Path) -> Path:
    """Rename a checkpoint out of the ``ckpt-`` namespace before deleting it: a kill during the
    deletion then leaves a ``.tmp-`` directory (removed on the next save), never a half-deleted
    ``ckpt-``."""
    aside = root / f"{_TMP}discard-{checkpoint.name}-{os.getpid()}"
    os.rename(checkpoint, aside)
    return aside


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of ``run_dir``, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    done = sorted(
        p for p in root.glob(_PREFIX + "*") if (p / META_FILE).is_file() and (p / STATE_FILE).is_file()
    )
    return done[-1] if done else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, meta) of one checkpoint directory; :class:`CheckpointError` if it is unreadable."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / STATE_FILE))
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}).") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise CheckpointError(f"checkpoint {path} has no step in {META_FILE}.")
    return tensors, meta
