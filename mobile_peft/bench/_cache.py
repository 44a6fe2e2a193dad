"""Where the benchmarks keep the bundles they export (``benchmarks/.cache/...``), one rule for all.

A cached bundle is reused only if it was exported the way the benchmark would export it now: a
``pte`` bundle's directory name carries :meth:`export.pte.PteOptions.fingerprint`, so changing an
export lever (or its default) makes the next run export afresh instead of measuring an old bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["bundle_path", "is_exported"]


def bundle_path(work_dir: str | Path, stem: str, fmt: str, pte_options: Any = None) -> Path:
    """``<work_dir>/<stem>-<fmt>``, plus ``-<fingerprint>`` for ``pte`` (default options when
    ``pte_options`` is None)."""
    name = f"{stem}-{fmt}"
    if fmt == "pte":
        from ..export.pte import PteOptions

        name += f"-{(pte_options or PteOptions()).fingerprint()}"
    return Path(work_dir) / name


def is_exported(path: Path) -> bool:
    """Whether ``path`` holds a finished export (the manifest is written last)."""
    from ..core.contract import MANIFEST_FILE

    return (path / MANIFEST_FILE).is_file()
