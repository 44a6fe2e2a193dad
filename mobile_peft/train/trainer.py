"""The eager reference trainer: adapter-only (or full) fine-tuning in plain PyTorch.

This is the numerical reference the exported artifacts are checked against, so it is kept
deliberately plain: a fixed, seeded batch order; SGD or AdamW from ``torch.optim``; no AMP.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..adapters.base import adapter_parameters, mark_only_adapters_trainable
from ..core.errors import ConfigError, DivergedError

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    steps: int = field(default=100, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=16, metadata={"help": "Examples per step."})
    lr: float = field(default=3e-3, metadata={"help": "Learning rate."})
    optimizer: Literal["adamw", "sgd"] = field(default="adamw", metadata={"help": f"One of {OPTIMIZERS}."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay."})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip the global gradient norm (None: off)."})
    full: bool = field(default=False, metadata={"help": "Train every weight (baseline) instead of the adapters."})
    seed: int = field(default=0, metadata={"help": "Seed of the batch order."})

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r}; expected one of {OPTIMIZERS}.")
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(
                f"steps={self.steps}, batch_size={self.batch_size}, lr={self.lr}: need steps >= 0, batch_size >= 1, lr > 0."
            )


class TrainerCallback(Protocol):
    """Called after every optimiser step (progress bars, rank allocators, logging)."""

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None: ...


@dataclass
class TrainResult:
    losses: list[float]
    wall_time_s: float
    trainable_params: int


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    examples: int

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "loss": self.loss, "examples": self.examples}


def select_trainable(model: nn.Module, full: bool) -> dict[str, nn.Parameter]:
    """Set ``requires_grad`` for adapter-only (found through the adapter protocol) or full
    fine-tuning and return the trainable parameters by name."""
    if full:
        from ..quant import QuantLinear

        if any(isinstance(m, QuantLinear) for m in model.modules()):
            raise ConfigError("full fine-tuning needs a float backbone; this model is quantised. Use quant='none'.")
        for p in model.parameters():
            p.requires_grad_(True)
        return dict(model.named_parameters())
    params = adapter_parameters(model)
    if not params:
        raise ConfigError("the model has no adapters to train; add some with apply_adapters() or train with full=True.")
    mark_only_adapters_trainable(model)
    return params


def make_optimizer(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def batches(dataset: Dataset, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """An endless, seeded stream of shuffled batches (a new permutation every epoch)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, drop_last=len(dataset) >= batch_size)
        yield from loader


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    callbacks: Sequence[TrainerCallback] = (),
    extra_loss: nn.Module | None = None,
    params: Mapping[str, nn.Parameter] | None = None,
) -> TrainResult:
    """Run ``config.steps`` optimiser steps; ``extra_loss(model)`` (e.g. a rank regulariser)
    is added to the task loss when given, and its own trainable parameters (e.g. ARD-LoRA's
    scaling factors) are optimised with the adapters. ``params``: train exactly these (their
    ``requires_grad`` already set by the caller, e.g. the alignment stage's vision tower and
    projector) instead of the adapters (or every weight with ``config.full``)."""
    params = dict(params) if params is not None else select_trainable(model, config.full)
    if extra_loss is not None:
        params.update({f"extra_loss.{n}": p for n, p in extra_loss.named_parameters() if p.requires_grad})
    optimizer = make_optimizer(list(params.values()), config)
    model.train()
    losses: list[float] = []
    stream = batches(dataset, config.batch_size, config.seed)
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        batch = next(stream)
        loss = model(batch["pixel_values"], batch["input_ids"], batch["labels"]).loss
        total = loss + extra_loss(model) if extra_loss is not None else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(params.values()), config.max_grad_norm)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergedError(f"loss became {value} at step {step}; lower the learning rate (lr={config.lr}).")
        losses.append(value)
        for callback in callbacks:
            callback.on_step_end(step, value, model)
    model.eval()
    wall = time.perf_counter() - start
    logger.info("trained %d steps in %.1fs, final loss %.4f", config.steps, wall, losses[-1] if losses else float("nan"))
    return TrainResult(losses=losses, wall_time_s=wall, trainable_params=sum(p.numel() for p in params.values()))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 64) -> EvalResult:
    """Exact-match accuracy of the answer (see ``MobileVLM.answer_correct``) and mean loss."""
    from ..models.vlm import correct_answers

    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    n = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        out = model(batch["pixel_values"], batch["input_ids"], batch["labels"])
        b = batch["input_ids"].shape[0]
        correct += int(correct_answers(out.logits, batch["labels"]).sum())
        loss_sum += float(out.loss) * b
        n += b
    model.train(was_training)
    if n == 0:
        raise ConfigError("evaluation data set is empty.")
    return EvalResult(accuracy=correct / n, loss=loss_sum / n, examples=n)
