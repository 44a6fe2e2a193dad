"""The eager reference trainer (adapter-only or full fine-tuning) and evaluation."""

from .trainer import (
    OPTIMIZERS,
    EvalResult,
    TrainConfig,
    TrainerCallback,
    TrainResult,
    batches,
    evaluate,
    make_optimizer,
    select_trainable,
    train,
)

__all__ = [
    "OPTIMIZERS",
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "TrainerCallback",
    "batches",
    "evaluate",
    "make_optimizer",
    "select_trainable",
    "train",
]
