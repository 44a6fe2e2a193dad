"""The demo's export step: the fine-tuned int8 tiny model -> ``pte`` and ``onnx`` bundles."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from mobile_peft.core import contract
from mobile_peft.core.errors import MissingExtraError

from .bundle import export_bundle

__all__ = ["export_demo_bundles"]

logger = logging.getLogger(__name__)


def export_demo_bundles(
    model: nn.Module, tokenizer: Any, out_dir: str | Path, batch_size: int = 8
) -> dict[str, Any]:
    """Export ``model`` (with its adapters) as ``<out_dir>/bundle_pte`` and ``<out_dir>/bundle_onnx``.

    Returns ``{format: {"path", "bytes", "seconds", "files": {name: bytes}}}``; a format whose
    optional backend is missing gets ``{"skipped": message}`` instead.
    """
    out_dir = Path(out_dir)
    results: dict[str, Any] = {}
    for fmt in (contract.FORMAT_PTE, contract.FORMAT_ONNX):
        try:
            result = export_bundle((model, tokenizer), fmt, out_dir / f"bundle_{fmt}", batch_size=batch_size)
        except MissingExtraError as exc:
            logger.warning("skipping the %s bundle: %s", fmt, exc)
            results[fmt] = {"skipped": str(exc)}
            continue
        results[fmt] = {
            "path": str(result.path),
            "bytes": result.total_bytes,
            "seconds": round(result.seconds, 1),
            "files": result.sizes,
        }
    return results
