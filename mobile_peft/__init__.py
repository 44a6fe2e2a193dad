"""mobile-peft: on-device fine-tuning of mobile vision-language models.

Author a mobile VLM (presets or a local checkpoint), add adapters (LoRA, Hydra) on a quantised
frozen backbone, schedule their ranks, train in eager PyTorch, and export trainable bundles
(``mobile_peft.export``) that the on-device runtime (``mobile_peft.runtime``) trains.

>>> from mobile_peft import LoraConfig, apply_adapters, build_model
>>> model, tokenizer = build_model("tiny", quant="int8")
>>> paths = apply_adapters(model, LoraConfig(r=8, target_modules=model.config.default_targets))

The names below are imported lazily (PEP 562): ``import mobile_peft.runtime`` must not pull in
the authoring layer, because the runtime is the reference of what a phone does without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from ._version import __version__

_LAZY = {
    "ADAPTERS": "adapters",
    "HydraConfig": "adapters",
    "LoraConfig": "adapters",
    "adapter_layers": "adapters",
    "adapter_parameters": "adapters",
    "apply_adapters": "adapters",
    "load_adapter": "adapters",
    "save_adapter": "adapters",
    "RankSchedule": "allocators",
    "InputSpec": "data",
    "VQADataset": "data",
    "load_dataset": "data",
    "CheckpointError": "core.errors",
    "ConfigError": "core.errors",
    "DataError": "core.errors",
    "MissingExtraError": "core.errors",
    "MobilePeftError": "core.errors",
    "PRESETS": "models",
    "MobileVLM": "models",
    "MobileVLMConfig": "models",
    "build_model": "models",
    "load_model": "models",
    "save_model": "models",
    "QuantLinear": "quant",
    "backbone_bytes": "quant",
    "quantize_model": "quant",
    "TrainConfig": "train",
    "evaluate": "train",
    "train": "train",
}

__all__ = [
    "ADAPTERS",
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
    "PRESETS",
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
# (checked against _LAZY by tests/test_packaging.py)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs; nothing is imported at run time
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
    from .core.errors import CheckpointError, ConfigError, DataError, MissingExtraError, MobilePeftError
    from .data import InputSpec, VQADataset, load_dataset
    from .models import PRESETS, MobileVLM, MobileVLMConfig, build_model, load_model, save_model
    from .quant import QuantLinear, backbone_bytes, quantize_model
    from .train import TrainConfig, evaluate, train
