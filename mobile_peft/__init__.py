"""mobile-peft: on-device fine-tuning of mobile vision-language models.

Author a mobile VLM (presets or a local checkpoint), add adapters (LoRA, Hydra) on a quantised
frozen backbone, schedule their ranks, train in eager PyTorch, and export trainable bundles
(``mobile_peft.export``) that the on-device runtime (``mobile_peft.runtime``) trains.

>>> from mobile_peft import LoraConfig, apply_adapters, build_model
>>> model, tokenizer = build_model("tiny", quant="int8")
>>> paths = apply_adapters(model, LoraConfig(r=8, target_modules=model.config.default_targets))
"""

from ._version import __version__
from .adapters import (
    ADAPTERS,
    HydraConfig,
    LoraConfig,
    adapter_layers,
    adapter_parameters,
    apply_adapters,
    load_adapter,
    save_adapter,
)
from .allocators import RankSchedule
from .data import InputSpec, VQADataset, load_dataset
from .errors import CheckpointError, ConfigError, DataError, MissingExtraError, MobilePeftError
from .models import PRESETS, MobileVLM, MobileVLMConfig, build_model, load_model, save_model
from .quant import QuantLinear, backbone_bytes, quantize_model
from .train import TrainConfig, evaluate, train

__all__ = [
    "ADAPTERS",
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HydraConfig",
    "InputSpec",
    "LoraConfig",
    "MissingExtraError",
    "MobilePeftError",
    "MobileVLM",
    "MobileVLMConfig",
    "QuantLinear",
    "RankSchedule",
    "TrainConfig",
    "VQADataset",
    "__version__",
    "adapter_layers",
    "adapter_parameters",
    "apply_adapters",
    "backbone_bytes",
    "build_model",
    "evaluate",
    "load_adapter",
    "load_dataset",
    "load_model",
    "quantize_model",
    "save_adapter",
    "save_model",
    "train",
]
