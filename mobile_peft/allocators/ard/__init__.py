"""``ard``: ARD-LoRA, learnable per-slot rank scaling factors with soft masks."""

from .allocator import ARDConfig, ARDLoraAllocator, ARDMasks, soft_mask, tv_pairs

__all__ = ["ARDConfig", "ARDLoraAllocator", "ARDMasks", "soft_mask", "tv_pairs"]
