"""The export formats, one registry entry each: what a format needs installed, its default
optimiser on the phone, and the function that writes its artifacts and ``methods`` section.

:func:`~.bundle.export_bundle` looks the format up here (``FORMATS[fmt]``) and never branches on
its name. Each entry imports its heavy library (ExecuTorch, ONNX Runtime training, coremltools)
only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobile_peft.adapters import adapter_parameters
from mobile_peft.core import contract
from mobile_peft.core.contract import MethodKey, OptimizerKey
from mobile_peft.core.registry import Registry

from .pte import PteOptions
from .wrappers import EvalWrapper, TrainingWrapper

__all__ = ["FORMATS", "ExportFormat", "ExportJob", "OptimizerDefaults", "example_inputs"]


@dataclass
class OptimizerDefaults:
    """What the phone's optimiser starts from (SGD for ``pte``: the only one on device; AdamW
    for ``onnx``; the Core ML head's SGD)."""

    name: str
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        K = OptimizerKey
        if self.name == "sgd":
            return {K.NAME: "sgd", K.LR: self.lr, K.MOMENTUM: self.momentum}
        return {
            K.NAME: self.name,
            K.LR: self.lr,
            K.BETAS: list(self.betas),
            K.EPS: self.eps,
            K.WEIGHT_DECAY: self.weight_decay,
        }


@dataclass(frozen=True)
class ExportJob:
    """One export: the prepared model (adapters applied, schedule's first phase in its masks)."""

    model: nn.Module
    tokenizer: Any
    out: Path
    batch_size: int
    pad_id: int
    optimizer: OptimizerDefaults
    answers: list[str] | None = None
    pte: PteOptions = PteOptions()  # how the ExecuTorch program is built (pte only)


@dataclass(frozen=True)
class ExportFormat:
    name: str
    default_optimizer: OptimizerDefaults
    require: Callable[[], None]  # raises MissingExtraError when the format's package is missing
    export: Callable[[ExportJob], tuple[dict[str, Any], list[str]]]  # -> (methods section, files)
    # -> (trainable bytes, activation bytes) of the phone's training step, for the manifest's
    # memory_bound; None: adapters inside the backbone (memory_bound.adapter_step_terms)
    step_terms: Callable[[ExportJob], tuple[int, int]] | None = None


FORMATS: Registry[ExportFormat] = Registry("export format")


def example_inputs(
    model: nn.Module, batch_size: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = model.config.input_spec
    pixels = torch.zeros(batch_size, 3, spec.image_size, spec.image_size)
    ids = torch.full((batch_size, spec.max_text_len), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, spec.max_text_len), contract.IGNORE_INDEX, dtype=torch.long)
    labels[:, -1] = pad_id  # one labelled token so tracing sees a finite loss
    return pixels, ids, labels


def _tensor_spec(name: str, t: torch.Tensor) -> dict[str, Any]:
    K = contract.TensorSpecKey
    return {K.NAME: name, K.SHAPE: list(t.shape), K.DTYPE: str(t.dtype).removeprefix("torch.")}


def _io(
    model: nn.Module, batch_size: int, pad_id: int, with_weights: bool
) -> tuple[tuple, tuple, dict[str, Any]]:
    train = TrainingWrapper(model)
    inputs = (*example_inputs(model, batch_size, pad_id), *train.example_masks())
    names = [
        contract.INPUT_PIXEL_VALUES,
        contract.INPUT_IDS,
        contract.INPUT_LABELS,
        *(s.input_name for s in train.slots),
    ]
    specs = [_tensor_spec(n, t) for n, t in zip(names, inputs)]
    eval_inputs = inputs
    eval_specs = list(specs)
    if with_weights:
        weights = tuple(p.detach().clone() for p in adapter_parameters(model).values())
        eval_inputs = (*inputs, *weights)
        eval_specs += [
            _tensor_spec(contract.TRAINABLE_PREFIX + n, t) for n, t in zip(train.trainable_names, weights)
        ]
    return inputs, eval_inputs, {"train_inputs": specs, "eval_inputs": eval_specs}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# -- ExecuTorch ----------------------------------------------------------------------------------
def _require_pte() -> None:
    from .pte import _require_executorch

    _require_executorch()


def _export_pte(job: ExportJob) -> tuple[dict[str, Any], list[str]]:
    from .pte import export_pte

    model = job.model
    inputs, eval_inputs, io = _io(model, job.batch_size, job.pad_id, with_weights=True)
    info = export_pte(
        TrainingWrapper(model),
        EvalWrapper(model, weights_as_inputs=True),
        inputs,
        eval_inputs,
        job.out,
        job.pte,
    )
    K = MethodKey
    methods = {
        K.TRAIN: {
            K.METHOD: contract.METHOD_TRAIN,
            K.INPUTS: io["train_inputs"],
            K.OUTPUTS: [contract.OUTPUT_LOSS],
            K.GRADIENTS_INDEX_METHOD: contract.ET_GRADIENTS_INDEX_PREFIX + contract.METHOD_TRAIN,
            K.PARAMETERS_INDEX_METHOD: contract.ET_PARAMETERS_INDEX_PREFIX + contract.METHOD_TRAIN,
            K.FQN_METHOD: contract.ET_FQN_PREFIX + contract.METHOD_TRAIN,
        },
        K.EVAL: {
            K.METHOD: contract.METHOD_EVAL,
            K.INPUTS: io["eval_inputs"],
            K.OUTPUTS: [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS],
        },
        K.PROGRAM: contract.PTE_FILE,
        K.TRAINABLE_DATA: contract.PTD_FILE,
        "xnnpack": info["xnnpack"],
        "executorch_version": _version("executorch"),
    }
    return methods, info["files"]


# -- ONNX Runtime training -----------------------------------------------------------------------
def _require_onnx() -> None:
    from .onnx import _require_ort_training

    _require_ort_training()


def _export_onnx(job: ExportJob) -> tuple[dict[str, Any], list[str]]:
    from .onnx import export_onnx

    inputs, _, io = _io(job.model, job.batch_size, job.pad_id, with_weights=False)
    info = export_onnx(
        job.model,
        inputs,
        [d[contract.TensorSpecKey.NAME] for d in io["train_inputs"]],
        job.out,
        job.optimizer,
    )
    return {MethodKey.TRAIN_INPUTS: io["train_inputs"], **info["methods"]}, info["files"]


# -- Core ML -------------------------------------------------------------------------------------
def _require_coreml() -> None:
    from .coreml import _require_coremltools

    _require_coremltools()


def _export_coreml(job: ExportJob) -> tuple[dict[str, Any], list[str]]:
    from .coreml import export_coreml

    info = export_coreml(
        job.model, job.tokenizer, job.out, answers=job.answers, lr=job.optimizer.lr, batch_size=job.batch_size
    )
    return info["methods"], info["files"]


def _coreml_step_terms(job: ExportJob) -> tuple[int, int]:
    from mobile_peft.data import DIGIT_NAMES

    from .memory_bound import head_step_terms

    return head_step_terms(job, len(job.answers or DIGIT_NAMES))  # the head's answers (export_coreml's default)


FORMATS.register(contract.FORMAT_PTE)(
    ExportFormat(contract.FORMAT_PTE, OptimizerDefaults("sgd", 5e-2), _require_pte, _export_pte)
)
# AdamW in torch.optim.AdamW semantics (onnx.py).
FORMATS.register(contract.FORMAT_ONNX)(
    ExportFormat(contract.FORMAT_ONNX, OptimizerDefaults("adamw", 3e-3), _require_onnx, _export_onnx)
)
FORMATS.register(contract.FORMAT_COREML)(
    ExportFormat(contract.FORMAT_COREML, OptimizerDefaults("sgd", 1e-2), _require_coreml, _export_coreml, _coreml_step_terms)
)
