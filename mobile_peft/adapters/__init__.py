"""Adapters: the layer protocol, target matching, LoRA and Hydra, and their files.

>>> from mobile_peft.adapters import LoraConfig, apply_adapters
>>> # apply_adapters(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
"""

from ._config import AdapterConfig
from .apply import apply_adapters, remove_adapters
from .base import (
    AdapterLayer,
    EffectiveAdapter,
    RankSlot,
    adapter_layers,
    adapter_parameters,
    mark_only_adapters_trainable,
)
from .hydra import HydraConfig, HydraLayer
from .io import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, load_adapter, save_adapter
from .lora import LoraConfig, LoraLayer
from .registry import ADAPTERS, AdapterMethod, get_adapter_method, method_for_config, method_for_peft_type
from .targets import match_targets, module_matches, resolve_pattern

__all__ = [
    "ADAPTERS",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "AdapterConfig",
    "AdapterLayer",
    "AdapterMethod",
    "EffectiveAdapter",
    "HydraConfig",
    "HydraLayer",
    "LoraConfig",
    "LoraLayer",
    "RankSlot",
    "adapter_layers",
    "adapter_parameters",
    "apply_adapters",
    "get_adapter_method",
    "load_adapter",
    "mark_only_adapters_trainable",
    "match_targets",
    "method_for_config",
    "method_for_peft_type",
    "module_matches",
    "remove_adapters",
    "resolve_pattern",
    "save_adapter",
]
