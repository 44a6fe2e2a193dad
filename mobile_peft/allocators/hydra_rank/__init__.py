"""``hydra-rank``: HyDRA, hierarchical and dynamic rank allocation with a performance model."""

from .allocator import HydraRankAllocator, HydraRankReallocator, grow_columns
from .config import HydraRankConfig

__all__ = ["HydraRankAllocator", "HydraRankConfig", "HydraRankReallocator", "grow_columns"]
