"""The alignment stage (LLaVA's stage 1): train the vision tower and projector of a VLM whose
language model is pretrained and stays frozen, on a captioning task, so that the image tokens
mean something to the decoder before any adapter is fine-tuned.

Here the captioning task is the embedded digits set's ``digit-name`` ("what digit is shown ?" ->
"seven"): the frozen decoder must learn to read the projected image tokens as a soft prompt that
names the digit. Only ``vision_tower.*`` and ``projector.*`` get gradients; the decoder's weights
get none (``requires_grad`` off, so backward skips their weight gradients), but gradients still
flow *through* it to the image tokens.

:func:`aligned_base` caches the result on disk, keyed by the preset and this stage's whole
config, so every later run (the rank benchmark's methods, seeds and tasks) starts from the very
same aligned weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import ConfigError
from .trainer import EvalResult, TrainConfig, evaluate, train

__all__ = ["ALIGNED_TOWERS", "AlignConfig", "AlignResult", "align", "align_key", "aligned_base", "freeze_for_alignment", "source_label"]

logger = logging.getLogger(__name__)

ALIGNED_TOWERS = ("vision_tower", "projector")  # what stage 1 trains; the language model is frozen
RESULT_FILE = "align.json"


@dataclass
class AlignConfig:
    task: str = field(default="digit-name", metadata={"help": "Digits captioning task (question -> the digit's word)."})
    steps: int = field(default=200, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=8, metadata={"help": "Examples per step."})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the vision tower and projector."})
    seed: int = field(default=0, metadata={"help": "Seed of the vision tower's init and the batch order."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the global gradient norm (None: off)."})
    train_limit: int | None = field(default=None, metadata={"help": "Use only this many training examples."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on this many eval examples (None: all 360)."})

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(
                f"AlignConfig steps={self.steps}, batch_size={self.batch_size}, lr={self.lr}: need steps >= 0, "
                "batch_size >= 1 and lr > 0."
            )


@dataclass
class AlignResult:
    losses: list[float]
    seconds: float
    trainable_params: int
    before: EvalResult
    after: EvalResult

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": len(self.losses),
            "seconds": round(self.seconds, 1),
            "trainable_params": self.trainable_params,
            "accuracy_before": self.before.accuracy,
            "accuracy_after": self.after.accuracy,
            "eval_loss_before": self.before.loss,
            "eval_loss_after": self.after.loss,
            "eval_examples": self.after.examples,
            "first_losses": [round(v, 4) for v in self.losses[:5]],
            "last_losses": [round(v, 4) for v in self.losses[-5:]],
        }


def freeze_for_alignment(model: nn.Module) -> dict[str, nn.Parameter]:
    """Freeze everything but the vision tower and projector; return those parameters by name."""
    params = {}
    for name, p in model.named_parameters():
        trainable = name.split(".", 1)[0] in ALIGNED_TOWERS
        p.requires_grad_(trainable)
        if trainable:
            params[name] = p
    if not params:
        raise ConfigError(f"the model has no {' or '.join(ALIGNED_TOWERS)} parameters to align.")
    return params


class _Progress:
    """Trainer callback forwarding ``(step, loss)`` to a progress function."""

    def __init__(self, progress: Callable[[int, float], None]) -> None:
        self.progress = progress

    def on_step_end(self, step: int, loss: float, model: nn.Module) -> None:
        self.progress(step, loss)


def align(
    model: nn.Module,
    tokenizer: Any,
    config: AlignConfig,
    progress: Callable[[int, float], None] | None = None,
) -> AlignResult:
    """Train ``model``'s vision tower and projector on ``config.task`` with the language model
    frozen (in place); exact-match caption accuracy on the eval split before and after."""
    from .job import make_datasets

    train_ds, eval_ds = make_datasets(
        f"digits:{config.task}", tokenizer, model.config.input_spec, 0,
        train_limit=config.train_limit, eval_limit=config.eval_limit,
    )
    params = freeze_for_alignment(model)
    before = evaluate(model, eval_ds)
    cfg = TrainConfig(
        steps=config.steps, batch_size=config.batch_size, lr=config.lr, optimizer="adamw",
        max_grad_norm=config.max_grad_norm, seed=config.seed,
    )
    callbacks = [_Progress(progress)] if progress else []
    result = train(model, train_ds, cfg, callbacks=callbacks, params=params) if config.steps else None
    losses, seconds = (result.losses, result.wall_time_s) if result else ([], 0.0)
    for p in model.parameters():
        p.requires_grad_(False)
    after = evaluate(model, eval_ds)
    logger.info("aligned %d steps in %.0fs: caption accuracy %.3f -> %.3f", config.steps, seconds, before.accuracy, after.accuracy)
    return AlignResult(losses, seconds, sum(p.numel() for p in params.values()), before, after)


def align_key(preset: str, config: AlignConfig, source: str = "") -> str:
    """The cache key: the preset, where its language model came from, and the whole stage config."""
    text = json.dumps([preset, source, asdict(config)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _language_model_source(preset: str) -> Path:
    """The GGUF file behind ``preset``: a registered preset's, or ``preset`` itself when it names a
    GGUF file (or a directory holding one)."""
    from ..models import PRESETS
    from ..models.gguf import is_gguf_source, resolve_gguf

    if is_gguf_source(preset):
        return resolve_gguf(preset)
    entry = PRESETS[preset]
    if entry.language_model is None:
        raise ConfigError(
            f"preset {preset!r} has no pretrained language model to align to; alignment is for presets built on "
            f"a GGUF decoder ({', '.join(n for n in PRESETS.names() if PRESETS[n].language_model)}) or a .gguf file."
        )
    return entry.language_model()


def source_label(preset: str) -> str:
    """A short name for ``preset``: itself, or the GGUF file's stem when it is a path."""
    from ..models.gguf import is_gguf_source, resolve_gguf

    return resolve_gguf(preset).stem if is_gguf_source(preset) else preset


def _build(preset: str, seed: int) -> tuple[nn.Module, Any]:
    from ..models import build_model
    from ..models.gguf import is_gguf_source, load_gguf

    return load_gguf(preset, seed=seed) if is_gguf_source(preset) else build_model(preset, seed=seed)


def aligned_base(
    preset: str,
    config: AlignConfig,
    cache_dir: str | Path,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, Any, dict[str, Any], bool]:
    """``(model, tokenizer, alignment record, cached)``: ``preset`` (a preset on a GGUF language
    model, or a ``.gguf`` path composed with the default vision tower) built with the vision init
    seeded by ``config.seed`` and aligned once, then read back from ``cache_dir/aligned-<key>``."""
    from ..models import load_model, save_model

    gguf = _language_model_source(preset)
    source = f"{gguf.name}:{gguf.stat().st_size}"
    label = source_label(preset)
    directory = Path(cache_dir) / f"aligned-{label}-{align_key(label, config, source)}"
    record_file = directory / RESULT_FILE
    if record_file.is_file() and (directory / "config.json").is_file():
        model, tokenizer = load_model(directory)
        return model, tokenizer, json.loads(record_file.read_text()), True
    model, tokenizer = _build(preset, config.seed)
    result = align(model, tokenizer, config, progress=progress)
    save_model(model, tokenizer, directory)
    record = {"preset": label, "language_model": source, "config": asdict(config), **result.as_dict()}
    record_file.write_text(json.dumps(record, indent=1) + "\n")  # written last: its presence marks a complete cache
    return model, tokenizer, record, False
