"""Where the benchmarks keep the bundles they export (``benchmarks/.cache/...``), one rule for all,
and the workloads ``bench speed`` and ``bench memory`` share (model, target set, cached bundles).

A cached bundle is reused only if it was exported the way the benchmark would export it now: its
directory name carries a fingerprint of the source code that turns a model into a bundle (the
``export`` package, ``quant``, ``adapters``, ``models``, ``core``) and, for ``pte``, of
:meth:`export.pte.PteOptions`, so changing an export lever, its default, or the exporter itself
makes the next run export afresh instead of measuring an old bundle.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGE_PROJECTOR_TARGETS", "TARGET_SETS", "bundle_path", "check_target_sets", "code_digest",
           "exporter_digest", "is_exported", "workload_bundles", "workload_model"]

# The model's default targets without the vision tower's alternative (models/config.py DEFAULT_TARGETS):
# no adapter, so no backward, in the vision tower.
LANGUAGE_PROJECTOR_TARGETS = (
    r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    r"|projector\.(linear_[12]|proj|mlp\.[13])"
)
TARGET_SETS = {"default": None, "language+projector": LANGUAGE_PROJECTOR_TARGETS}


def code_digest(roots: Iterable[Path]) -> str:
    """SHA-256 of every ``.py`` file under ``roots`` (paths and contents, in a stable order)."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def exporter_digest() -> str:
    """:func:`code_digest` of the packages whose code shapes an exported bundle."""
    from .. import adapters, core, export, models, quant

    return code_digest(Path(package.__file__).parent for package in (adapters, core, export, models, quant))


def bundle_path(work_dir: str | Path, stem: str, fmt: str, pte_options: Any = None) -> Path:
    """``<work_dir>/<stem>-<fmt>-<fingerprint>``: eight hex digits of :func:`exporter_digest`
    and, for ``pte``, of the export options (the defaults when ``pte_options`` is None)."""
    key = exporter_digest()
    if fmt == "pte":
        from ..export.pte import PteOptions

        key += (pte_options or PteOptions()).fingerprint()
    return Path(work_dir) / f"{stem}-{fmt}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def is_exported(path: Path) -> bool:
    """Whether ``path`` holds a finished export (the manifest is written last)."""
    from ..core.contract import MANIFEST_FILE

    return (path / MANIFEST_FILE).is_file()


def export_seconds(path: Path) -> float | None:
    """The wall time of the export that made the bundle at ``path``, if it was timed."""
    timed = Path(path) / "export_seconds.txt"
    return float(timed.read_text()) if timed.is_file() else None


def check_target_sets(targets: tuple[str, ...]) -> None:
    """Raise :class:`~mobile_peft.core.errors.ConfigError` naming any of ``targets`` that is not a
    key of :data:`TARGET_SETS` (before a long benchmark starts, not when it reaches them)."""
    from ..core.errors import ConfigError

    unknown = sorted(set(targets) - set(TARGET_SETS))
    if unknown:
        raise ConfigError(f"unknown target set(s) {unknown}; expected some of {list(TARGET_SETS)}.")


def workload_model(preset: str, adapter: str, targets: str, quant: str, rank: int) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a benchmark workload: ``preset`` built with seed 0 at ``quant``,
    ``adapter`` of rank ``rank`` on the target set ``targets`` (a key of :data:`TARGET_SETS`), in
    eval mode as the bundles' graphs are captured."""
    from ..adapters import apply_adapters
    from ..models import build_model
    from ..train.job import make_adapter_config

    check_target_sets((targets,))
    model, tokenizer = build_model(preset, quant=quant, seed=0)
    pattern = TARGET_SETS[targets] or model.config.default_targets
    apply_adapters(model, make_adapter_config(adapter, rank, None, pattern))
    return model.eval(), tokenizer


def workload_bundles(work_dir: str | Path, preset: str, adapter: str, targets: str, quant: str, rank: int,
                     batch: int, formats: tuple[str, ...], model: Any = None) -> dict[str, Path]:
    """The workload's bundle per format under ``work_dir``, exporting (seed 0) the ones not cached;
    ``model``: the workload's ``(model, tokenizer)`` if the caller has built it already. Each
    export's wall time goes beside its bundle (``export_seconds.txt``)."""
    import time

    from ..export import export_bundle

    stem = f"{preset}-{quant}-{adapter}-r{rank}-{targets.replace('+', '-')}-b{batch}"
    paths = {fmt: bundle_path(work_dir, stem, fmt) for fmt in formats}
    missing = [fmt for fmt, path in paths.items() if not is_exported(path)]
    if missing:
        model = model or workload_model(preset, adapter, targets, quant, rank)
        for fmt in missing:
            start = time.perf_counter()
            export_bundle(model, fmt, paths[fmt], batch_size=batch, seed=0)
            (paths[fmt] / "export_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return paths
