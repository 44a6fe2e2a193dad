"""LoRA adapters (Hu et al., 2021): config and layer."""

from .config import LORA_INITS, LoraConfig, LoraInit
from .layer import LoraLayer

__all__ = ["LORA_INITS", "LoraConfig", "LoraInit", "LoraLayer"]
