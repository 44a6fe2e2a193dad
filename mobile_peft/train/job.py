"""One fine-tuning job, as the CLI, the demo and the benchmarks run it: data -> adapters ->
eval before -> train -> eval after."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..adapters import ADAPTERS, apply_adapters
from ..adapters.base import adapter_layers
from ..core.errors import ConfigError, RegistryError
from ..data import VQADataset, load_dataset
from ..quant import BackboneBytes, backbone_bytes
from .trainer import EvalResult, TrainConfig, TrainerCallback, TrainResult, evaluate, train


def make_adapter_config(method: str, rank: int, alpha: float | None, targets: str | list[str], exclude: str | list[str] | None = None) -> Any:
    """A uniform-rank config of adapter ``method`` (``alpha`` defaults to ``2 * rank``)."""
    try:
        config_class = ADAPTERS[method].config_class
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    return config_class.uniform(rank, float(2 * rank if alpha is None else alpha), targets, exclude)


def make_datasets(data: str, tokenizer: Any, spec: Any, seed: int = 0, train_limit: int | None = None, eval_limit: int | None = None,
                  skip_bad: bool = False, skipped: list[str] | None = None) -> tuple[VQADataset, VQADataset]:
    """Train and eval datasets of ``data``; with ``skip_bad``, a folder's bad lines are left out and
    listed once each in ``skipped``."""
    found: list[str] = []
    train_ds = VQADataset(load_dataset(data, "train", seed=seed, limit=train_limit, skip_bad=skip_bad, skipped=found), tokenizer, spec)
    eval_ds = VQADataset(load_dataset(data, "eval", seed=seed, limit=eval_limit, skip_bad=skip_bad), tokenizer, spec)
    if skipped is not None:
        skipped.extend(found)
    return train_ds, eval_ds


@dataclass
class FinetuneReport:
    before: EvalResult
    after: EvalResult
    train: TrainResult
    backbone: BackboneBytes
    adapted_modules: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy_before": self.before.accuracy,
            "accuracy_after": self.after.accuracy,
            "eval_loss_before": self.before.loss,
            "eval_loss_after": self.after.loss,
            "eval_examples": self.after.examples,
            "trainable_params": self.train.trainable_params,
            "adapted_modules": len(self.adapted_modules),
            "steps": len(self.train.losses),
            "final_train_loss": self.train.losses[-1] if self.train.losses else None,
            "train_seconds": round(self.train.wall_time_s, 2),
            **{f"backbone_{k}": v for k, v in self.backbone.as_dict().items()},
        }


def finetune(
    model: nn.Module,
    train_ds: VQADataset,
    eval_ds: VQADataset,
    config: TrainConfig,
    adapter_config: Any | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    extra_loss: nn.Module | None = None,
) -> FinetuneReport:
    """Add adapters (unless ``config.full`` or the model already carries some), measure eval
    accuracy, train, measure again."""
    if config.full and adapter_config is not None:
        raise ConfigError("full fine-tuning trains every weight; drop the adapter config (or full=False).")
    adapted = list(adapter_layers(model))
    if adapter_config is not None:
        adapted = apply_adapters(model, adapter_config)
    before = evaluate(model, eval_ds)
    result = train(model, train_ds, config, callbacks=callbacks, extra_loss=extra_loss)
    after = evaluate(model, eval_ds)
    return FinetuneReport(before=before, after=after, train=result, backbone=frozen_bytes(model), adapted_modules=adapted)


def frozen_bytes(model: nn.Module) -> BackboneBytes:
    """Backbone bytes of ``model``, its adapter tensors and rank masks left out."""
    layers = adapter_layers(model).values()
    adapter_tensors = {id(t) for layer in layers for t in [*layer.adapter_params().values(), *layer.buffers(recurse=False)]}
    return backbone_bytes(model, exclude=adapter_tensors)
