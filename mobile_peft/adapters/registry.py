"""The registry of adapter methods: name -> config class + layer class + file ``peft_type``."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import RegistryError
from ..core.registry import Registry
from ._config import AdapterConfig
from .base import AdapterLayer
from .hydra import HydraConfig, HydraLayer
from .lora import LoraConfig, LoraLayer

__all__ = ["ADAPTERS", "AdapterMethod", "get_adapter_method", "method_for_config", "method_for_peft_type"]


@dataclass(frozen=True)
class AdapterMethod:
    """One adapter method: its config dataclass, its layer class and the ``peft_type`` written to
    ``adapter_config.json``."""

    name: str
    config_class: type[AdapterConfig]
    layer_class: type[AdapterLayer]
    peft_type: str


ADAPTERS: Registry[AdapterMethod] = Registry("adapter method")

for _method in (
    AdapterMethod("lora", LoraConfig, LoraLayer, LoraConfig.peft_type),
    AdapterMethod("hydra", HydraConfig, HydraLayer, HydraConfig.peft_type),
):
    ADAPTERS.register(_method.name)(_method)


def get_adapter_method(name: str) -> AdapterMethod:
    """The registered method called ``name`` (RegistryError listing the choices otherwise)."""
    return ADAPTERS[name]


def method_for_config(config: object) -> AdapterMethod:
    for name in ADAPTERS:
        if isinstance(config, ADAPTERS[name].config_class):
            return ADAPTERS[name]
    raise RegistryError(
        f"{type(config).__name__} is not the config of a registered adapter method; expected one of "
        f"{', '.join(ADAPTERS[n].config_class.__name__ for n in ADAPTERS)}."
    )


def method_for_peft_type(peft_type: str) -> AdapterMethod:
    for name in ADAPTERS:
        if ADAPTERS[name].peft_type == peft_type:
            return ADAPTERS[name]
    raise RegistryError(
        f"no adapter method writes peft_type {peft_type!r}; known: "
        f"{', '.join(ADAPTERS[n].peft_type for n in ADAPTERS)}."
    )
