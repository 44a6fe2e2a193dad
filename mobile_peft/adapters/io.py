"""Save and load adapters as ``adapter_config.json`` + ``adapter_model.safetensors``.

LoRA files are Hugging Face PEFT files: ``PeftModel.from_pretrained(base, directory)`` loads
them and gives the same outputs. Tensor keys are ``base_model.model.<module path>.<param>.weight``
(``lora_A`` / ``lora_B``; no adapter name), the config has ``peft_type: "LORA"``. Hydra files use
the same layout with ``peft_type: "HYDRA"`` and keys ``parallel_down`` / ``parallel_up`` /
``sequential_down`` / ``sequential_up``: this SDK's own format, which PEFT cannot load.

**What is saved is the effective adapter.** Rank masks are folded in: only active ranks are
written, each up-projection column multiplied by its mask value, ``r`` = number of active ranks
and ``alpha`` rescaled so that ``alpha / r`` is unchanged (per module through exact-path
``rank_pattern`` / ``alpha_pattern`` entries). The file is therefore exact for the current masks
and PEFT-loadable, but the inactive ranks' weights and the maximum ranks are not kept: a loaded
adapter has every saved rank active. Modules with no active rank are left out of the file.

**Sub-model roots.** A VLM holds its language model at e.g. ``language_model``; with
``save_adapter(model, d, root="language_model")`` module paths are written relative to that
sub-module, so PEFT can load the file into the Hugging Face language model alone.

**Where our metadata lives.** PEFT 0.21's ``PeftConfig.from_peft_type`` accepts unknown keys in
``adapter_config.json`` only by dropping them with a warning that tells the user to upgrade PEFT,
which would be misleading. So mobile-peft's metadata (``method``, ``root``, ``mobile_peft_version``,
``format_version``) is a JSON string under the ``mobile_peft`` key of the safetensors header
metadata (beside PEFT's own ``format: pt``), which PEFT ignores and which travels with the weights.
Loading uses safetensors only (no pickle).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .._version import __version__
from ..errors import CheckpointError, ConfigError, MobilePeftError
from ._config import ModuleRanks
from .apply import apply_adapters, remove_adapters
from .base import AdapterLayer, adapter_layers
from .registry import ADAPTERS, AdapterMethod, method_for_peft_type

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "FORMAT_VERSION", "load_adapter", "save_adapter"]

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 1
_KEY_PREFIX = "base_model.model."  # PEFT's prefix in front of the base model's module paths
_METADATA_KEY = "mobile_peft"
_SHOWN = 5


def _key(path: str, param: str) -> str:
    return f"{_KEY_PREFIX}{path}.{param}.weight"


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
    tensors: dict[str, torch.Tensor] = {}
    for path, layer in layers.items():
        rel = _relative(path, root)
        effective = layer.effective_adapter()
        if not any(effective.ranks.values()):
            logger.info("skipping %s: no active rank", path)
            continue
        modules[rel] = {s: (effective.ranks[s], effective.alphas[s]) for s in effective.ranks}
        for param, tensor in effective.tensors.items():
            tensors[_key(rel, param)] = tensor.detach().to("cpu").contiguous()
    if not modules:
        raise ConfigError("every adapter layer has all its ranks masked off; there is nothing to save.")
    dropout = next(iter(layers.values())).dropout_p
    config = method.config_class.from_effective(modules, dropout)
    data = {**config.to_json_dict(), "task_type": task_type}
    metadata = {
        "method": method.name,
        "root": root,
        "mobile_peft_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot save an adapter to {directory}: it exists and is not a directory.")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ADAPTER_CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    save_file(
        tensors,
        str(directory / ADAPTER_WEIGHTS_NAME),
        metadata={"format": "pt", _METADATA_KEY: json.dumps(metadata)},
    )
    logger.info("saved %s adapter (%d modules) to %s", method.name, len(modules), directory)
    return directory


def _read(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    if not directory.is_dir():
        raise CheckpointError(f"adapter directory {directory} does not exist or is not a directory.")
    missing = [n for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME) if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(
            f"adapter directory {directory} lacks {', '.join(missing)}; expected {ADAPTER_CONFIG_NAME} "
            f"and {ADAPTER_WEIGHTS_NAME} (as written by save_adapter or PEFT's save_pretrained)."
        )
    try:
        data = json.loads((directory / ADAPTER_CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG_NAME} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "peft_type" not in data:
        raise CheckpointError(
            f"{directory / ADAPTER_CONFIG_NAME} has no 'peft_type'; it is not an adapter config."
        )
    try:
        with safe_open(str(directory / ADAPTER_WEIGHTS_NAME), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        ours = json.loads(header[_METADATA_KEY]) if _METADATA_KEY in header else {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{directory / ADAPTER_WEIGHTS_NAME} is not a readable safetensors file: {exc}"
        ) from None
    return data, tensors, ours


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
    data, tensors, ours = _read(directory)
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
        _key(path, name): param
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
