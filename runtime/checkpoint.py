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
there is never a half-written ``ckpt-``. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
    format-specific files before the rename."""
    from safetensors.numpy import save_file

    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{_TMP}{step:08d}-{os.getpid()}"
    tmp.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / STATE_FILE))
    (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=1) + "\n")
    if extra is not None:
        extra(tmp)
    for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
        _fsync_path(file)
    _fsync_path(tmp)
    final = root / f"{_PREFIX}{step:08d}"
    if final.exists():  # the same step saved again (a resumed run re-reaching it): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_path(root)
    for old in sorted(root.glob(_PREFIX + "*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of ``run_dir``, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    done = sorted(
        p for p in root.glob(_PREFIX + "*") if (p / META_FILE).is_file() and (p / STATE_FILE).is_file()
    )
    return done[-1] if done else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, meta) of one checkpoint directory."""
    from safetensors.numpy import load_file

    path = Path(path)
    return load_file(str(path / STATE_FILE)), json.loads((path / META_FILE).read_text())
