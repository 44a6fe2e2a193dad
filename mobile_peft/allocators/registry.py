"""The registry of rank allocators (one folder each); duplicate names are refused."""

from __future__ import annotations

from .._registry import Registry
from .base import Allocator

__all__ = ["ALLOCATORS", "get_allocator"]

ALLOCATORS: Registry[type[Allocator]] = Registry("rank allocator")


def get_allocator(name: str, **options: object) -> Allocator:
    """An allocator instance by name (``uniform``, ``hydra-rank``, ``ard``); ``options`` are the
    fields of its config dataclass."""
    _load_builtins()
    cls = ALLOCATORS[name]
    return cls(**options)  # type: ignore[arg-type]


def _load_builtins() -> None:
    # Importing the folders registers them; done lazily to keep import order simple.
    from . import ard, hydra_rank, uniform  # noqa: F401
