"""The registry of rank allocators (one folder each, which registers itself when imported; the
package ``__init__`` imports every folder, so the table is never empty); duplicate names are
refused."""

from __future__ import annotations

from ..core.registry import Registry
from .base import Allocator

__all__ = ["ALLOCATORS", "get_allocator"]

ALLOCATORS: Registry[type[Allocator]] = Registry("rank allocator")


def get_allocator(name: str, **options: object) -> Allocator:
    """An allocator instance by name (``uniform``, ``hydra-rank``, ``ard``); ``options`` are the
    fields of its config dataclass."""
    cls = ALLOCATORS[name]
    return cls(**options)  # type: ignore[arg-type]
