"""Save and load adapters as ``adapter_config.json`` + ``adapter_model.safetensors``.

The file format and its one writer/reader are the torch-free core's
(:mod:`mobile_peft.core.adapter_files`: PEFT-loadable LoRA files, this SDK's Hydra files, our
metadata in the safetensors header); the on-device runtime writes its personal adapter with the
very same code. This module adds what needs the model: collecting the *effective* adapter of each
layer (rank masks folded in: only active ranks, up columns times their mask value, ``alpha``
rescaled so ``alpha / r`` is unchanged; modules with no active rank are left out) and loading a
file back into adapter layers.

**Sub-model roots.** A VLM holds its language model at e.g. ``language_model``; with
``save_adapter(model, d, root="language_model")`` module paths are written relative to that
sub-module, so PEFT can load the file into the Hugging Face language model alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..core import adapter_files as files
from ..core.adapter_files import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    FORMAT_VERSION,
    ModuleRanks,
    tensor_key,
)
from ..core.errors import CheckpointError, ConfigError, MobilePeftError
from .apply import apply_adapters, remove_adapters
from .base import AdapterLayer, adapter_layers
from .registry import ADAPTERS, AdapterMethod, method_for_peft_type

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "FORMAT_VERSION", "load_adapter", "save_adapter"]

logger = logging.getLogger(__name__)

_SHOWN = 5


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy for the core's writer (bfloat16, which numpy lacks, is written as float32)."""
    tensor = tensor.detach().to("cpu").contiguous()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def _relative(path: str, root: str) -> str:
    if not root:
        return path
    if not path.startswith(root + "."):
        raise ConfigError(
            f"adapter layer {path!r} is not under root={root!r}; save with root='' or a common prefix "
            "of every adapted module."
        )
    return path[len(root) + 1 :]


def _method_of(layers: dict[str, AdapterLayer]) -> AdapterMethod:
    kinds = {type(layer) for layer in layers.values()}
    if len(kinds) != 1:
        raise ConfigError(
            f"the model mixes adapter layer types {sorted(k.__name__ for k in kinds)}; save one method."
        )
    (kind,) = kinds
    for name in ADAPTERS:
        if ADAPTERS[name].layer_class is kind:
            return ADAPTERS[name]
    raise ConfigError(f"{kind.__name__} is not the layer of a registered adapter method.")


def save_adapter(
    model: nn.Module, directory: str | Path, root: str = "", task_type: str | None = None
) -> Path:
    """Write the effective adapter of ``model`` to ``directory`` (created if needed).

    ``root`` names the sub-module that module paths are written relative to (every adapted module
    must sit under it); ``task_type`` is copied into the PEFT config (e.g. ``"CAUSAL_LM"``, which
    makes ``PeftModel.from_pretrained`` build a ``PeftModelForCausalLM``). Returns the directory.
    """
    layers = adapter_layers(model)
    if not layers:
        raise ConfigError(
            "the model has no adapter layers to save; call apply_adapters(model, config) first."
        )
    method = _method_of(layers)
    modules: ModuleRanks = {}
    tensors: dict[str, np.ndarray] = {}
    for path, layer in layers.items():
        rel = _relative(path, root)
        effective = layer.effective_adapter()
        if not any(effective.ranks.values()):
            logger.info("skipping %s: no active rank", path)
            continue
        modules[rel] = {s: (effective.ranks[s], effective.alphas[s]) for s in effective.ranks}
        for param, tensor in effective.tensors.items():
            tensors[tensor_key(rel, param)] = _numpy(tensor)
    if not modules:
        raise ConfigError("every adapter layer has all its ranks masked off; there is nothing to save.")
    dropout = next(iter(layers.values())).dropout_p
    config = files.effective_config(method.name, modules, dropout, task_type=task_type)
    files.write_adapter_files(directory, config, tensors, files.adapter_metadata(method.name, root, __version__))
    logger.info("saved %s adapter (%d modules) to %s", method.name, len(modules), directory)
    return Path(directory)


def _describe(keys: set[str]) -> str:
    shown = sorted(keys)[:_SHOWN]
    return ", ".join(shown) + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_adapter(model: nn.Module, directory: str | Path, root: str | None = None) -> list[str]:
    """Apply the adapter saved in ``directory`` to ``model`` (in place) and load its weights.

    Reads files written by :func:`save_adapter` or PEFT LoRA files without unsupported features.
    ``root`` defaults to the one recorded in the file (``""`` for PEFT's own files). Returns the
    adapted module paths (full paths in ``model``). Raises CheckpointError for a missing or damaged
    directory, ConfigError when the file's modules or shapes do not match the model (the model is
    then left without adapters, as it was).
    """
    directory = Path(directory)
    data, tensors, ours = files.read_adapter_files(directory, framework="pt")
    try:
        method = method_for_peft_type(data["peft_type"])
    except MobilePeftError as exc:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG_NAME}: {exc}") from None
    root = ours.get("root", "") if root is None else root
    config = method.config_class.from_json_dict(data)
    try:
        target = model.get_submodule(root) if root else model
    except AttributeError:
        raise ConfigError(
            f"the adapter's root {root!r} is not a sub-module of {type(model).__name__}."
        ) from None
    paths = apply_adapters(target, config)
    try:
        _load_weights(target, tensors)
    except ConfigError:
        remove_adapters(target)
        raise
    logger.info("loaded %s adapter (%d modules) from %s", method.name, len(paths), directory)
    return [f"{root}.{p}" if root else p for p in paths]


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = {
        tensor_key(path, name): param
        for path, layer in adapter_layers(model).items()
        for name, param in layer.adapter_params().items()
    }
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from the file: {_describe(missing)}")
        if unexpected:
            parts.append(f"not in the model: {_describe(unexpected)}")
        raise ConfigError(
            "adapter weights do not match the model (" + "; ".join(parts) + "). Check that the adapter "
            "was saved from this architecture and that root names the right sub-module."
        )
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(p.shape)}"
        for k, p in expected.items()
        if tensors[k].shape != p.shape
    ]
    if wrong:
        raise ConfigError(f"adapter weight shapes do not match the model: {'; '.join(wrong[:_SHOWN])}.")
    with torch.no_grad():
        for key, param in expected.items():
            param.copy_(tensors[key].to(dtype=param.dtype, device=param.device))
