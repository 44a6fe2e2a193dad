"""Fixed-rank LoRA: the baseline allocator."""

from .allocator import UniformAllocator

__all__ = ["UniformAllocator"]
