"""Put adapters into a model in place, and take them out again."""

from __future__ import annotations

import logging

from torch import nn

from ..core.errors import ConfigError
from ._config import AdapterConfig
from .base import adapter_layers, mark_only_adapters_trainable
from .registry import method_for_config
from .targets import match_targets

__all__ = ["apply_adapters", "remove_adapters"]

logger = logging.getLogger(__name__)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def apply_adapters(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Wrap every linear module of ``model`` selected by ``config`` in that method's adapter layer,
    in place, and freeze everything except the adapter tensors. Returns the adapted paths.

    The config is validated and every layer is matched and built before any is swapped into the
    model, so a ConfigError leaves the model's structure as it was.
    """
    method_for_config(config)
    if adapter_layers(model):
        raise ConfigError(
            "the model already has adapter layers; one adapter per model. Call remove_adapters(model) "
            "first, or merge them into a fresh copy of the base model."
        )
    paths = match_targets(model, config.target_modules, config.exclude_modules)
    layers = {path: config.build_layer(model.get_submodule(path), path) for path in paths}
    for path, layer in layers.items():
        _set_submodule(model, path, layer)
    trainable = mark_only_adapters_trainable(model)
    logger.info("applied %s to %d modules (%d trainable numbers)", config.method, len(paths), trainable)
    return paths


def remove_adapters(model: nn.Module) -> list[str]:
    """Replace every adapter layer of ``model`` by its original (unmerged) base layer, in place;
    returns the paths that were restored. Base-layer parameters stay frozen."""
    layers = adapter_layers(model)
    for path, layer in layers.items():
        layer.unmerge()
        if path:
            _set_submodule(model, path, layer.base_layer)
    return list(layers)
