"""ONNX Runtime training export: ``training_model.onnx``, ``eval_model.onnx``,
``optimizer_model.onnx`` (AdamW) and ``checkpoint``; ``inference_model.onnx`` after training.

Stages::

    capture(wrapper, inputs)   torch.onnx.export(dynamo=False, opset 15, TRAINING, no folding)
    artifacts(onnx, names)     onnxruntime.training.artifacts.generate_artifacts (loss = graph output 0)
    recompute(training)        each backward matmul rebuilds the frozen weight it reads from int8/int4
                               (``_onnx_recompute``) instead of keeping the forward's fp32 copy
    torch_adamw(optimizer)     AdamW node in torch.optim.AdamW mode (adam_mode=0)
    fix_ir_versions(dir)       IR version 10, the highest ORT 1.19 loads

Why these settings (DESIGN.md): the dynamo exporter folds the adapter tensors into constants and
trips ORT's gradient builder, as does opset 17; constant folding would turn the int8 backbone into
fp32 constants. The training graph computes the loss itself (``EvalWrapper``: loss, logits; the same
cross-entropy as eager), so ``generate_artifacts`` adds no loss block. Only the adapter tensors
are in ``requires_grad``; every other initializer (the int8/int4 backbone, norms) is frozen and
stays in its stored dtype in ``checkpoint``.

Training (:class:`OrtTrainer`) uses ``onnxruntime.training.api``: ``CheckpointState``,
``Module``, ``Optimizer``; after training, :meth:`OrtTrainer.export_inference` writes an inference
graph (``Module.export_model_for_inferencing``) with the trained weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobile_peft.adapters import adapter_parameters
from mobile_peft.core import contract
from mobile_peft.core.contract import MethodKey
from mobile_peft.core.errors import MissingExtraError

from ._onnx_recompute import QuantizedWeight, recompute_dequantised_weights
from .wrappers import EvalWrapper

__all__ = [
    "OrtTrainer", "artifacts", "capture", "export_onnx", "fix_ir_versions", "quantized_weights", "recompute", "torch_adamw",
]

logger = logging.getLogger(__name__)

_EXTRA_HINT = "onnxruntime-training 1.19.2 ships wheels for Linux and Python <= 3.11 only"


def _require_ort_training() -> None:
    try:
        import onnx  # noqa: F401
        from onnxruntime.training import artifacts as _  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "onnxruntime-training", "onnx", f"Exporting an ONNX Runtime training bundle ({_EXTRA_HINT})"
        ) from None


def capture(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    training: bool,
) -> Path:
    """Stage 1: the TorchScript-based ONNX exporter at :data:`~.contract.ONNX_OPSET`."""
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(
        module,
        inputs,
        str(path),
        input_names=input_names,
        output_names=output_names,
        opset_version=contract.ONNX_OPSET,
        do_constant_folding=False,
        training=mode,
        dynamo=False,
    )
    return path


def fix_ir_versions(paths: Sequence[Path]) -> None:
    """Stage 3: set every model's IR version to :data:`~.contract.ONNX_IR_VERSION`."""
    import onnx

    for path in paths:
        model = onnx.load(str(path))
        if model.ir_version > contract.ONNX_IR_VERSION:
            model.ir_version = contract.ONNX_IR_VERSION
            onnx.save(model, str(path))


def quantized_weights(module: nn.Module, prefix: str = "model.") -> dict[str, QuantizedWeight]:
    """The frozen quantised weights of ``module`` as the captured graph names them."""
    from mobile_peft.quant import QuantLinear

    weights = {}
    for path, layer in module.named_modules():
        if isinstance(layer, QuantLinear):
            qweight = f"{prefix}{path}.qweight"
            weights[qweight] = QuantizedWeight(
                qweight, f"{prefix}{path}.scales", layer.mode, layer.in_features, layer.group_size
            )
    return weights


def recompute(training_model: Path, weights: dict[str, QuantizedWeight]) -> int:
    """Stage 2, after the artifacts: backward matmuls rebuild the frozen weights they read
    (``_onnx_recompute``); returns how many."""
    import onnx

    model = onnx.load(str(training_model))
    count = recompute_dequantised_weights(model, weights)
    if count:
        onnx.save(model, str(training_model))
    return count


def artifacts(
    onnx_path: Path,
    trainable: list[str],
    out_dir: Path,
    optimizer: Any,
    weights: dict[str, QuantizedWeight] | None = None,
) -> list[Path]:
    # The captured graph outputs (loss, logits): the loss block is a pass-through of ``loss``
    # (gradients flow from it) and ``logits`` rides along as an extra output of the training and
    # eval models, so accuracy and the post-training inference graph need no second export.
    """Stage 2: ORT training artifacts; ``trainable`` are the only ``requires_grad`` tensors."""
    import onnx
    import onnxruntime
    from onnxruntime.training import artifacts as ort_artifacts
    from onnxruntime.training import onnxblock

    # errors only, for the sessions the Python side creates (the C++ builder: see below)
    onnxruntime.set_default_logger_severity(3)
    model = onnx.load(str(onnx_path))
    initializers = {init.name for init in model.graph.initializer}
    missing = sorted(set(trainable) - initializers)
    if missing:
        raise RuntimeError(f"adapter tensors vanished from the ONNX graph (folded?): {missing[:3]}")
    frozen = sorted(initializers - set(trainable))
    block = onnxblock.optim.AdamW(
        betas=tuple(optimizer.betas), eps=optimizer.eps, weight_decay=optimizer.weight_decay
    )
    with _native_info_to_debug_log():
        ort_artifacts.generate_artifacts(
            model,
            requires_grad=list(trainable),
            frozen_params=frozen,
            loss=None,
            loss_input_names=[contract.OUTPUT_LOSS],
            additional_output_names=[contract.OUTPUT_LOGITS],
            optimizer=block,
            artifact_directory=str(out_dir),
        )
    paths = [
        out_dir / contract.ONNX_TRAINING_FILE,
        out_dir / contract.ONNX_EVAL_FILE,
        out_dir / contract.ONNX_OPTIMIZER_FILE,
    ]
    torch_adamw(out_dir / contract.ONNX_OPTIMIZER_FILE)
    if weights:
        recompute(out_dir / contract.ONNX_TRAINING_FILE, weights)
    fix_ir_versions(paths)
    return paths


@contextlib.contextmanager
def _native_info_to_debug_log() -> Iterator[None]:
    """ORT's gradient builder logs every graph pass at INFO (~160 lines for ``tiny``) from C++,
    whatever the Python-side logger severity. Capture file descriptor 2 for the block: INFO and
    VERBOSE lines go to this module's debug log, anything else back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if "[I:onnxruntime" in line or "[V:onnxruntime" in line:
                    logger.debug("%s", line)
                elif line.strip():
                    print(line, file=sys.stderr)


def torch_adamw(path: Path) -> None:
    """Give the ``AdamWOptimizer`` node ``adam_mode=0`` (torch.optim.AdamW: eps added to the
    bias-corrected ``sqrt(v)``, decay before the update). onnxblock hard-codes mode 1 (Hugging
    Face: eps added before bias correction), which differs from torch by up to ~1% of an adapter
    tensor's norm after one step when gradients are small."""
    import onnx

    model = onnx.load(str(path))
    found = False
    for node in model.graph.node:
        if node.op_type == "AdamWOptimizer":
            for attribute in node.attribute:
                if attribute.name == "adam_mode":
                    attribute.i = 0
                    found = True
    if not found:
        raise RuntimeError(
            f"{path} has no AdamWOptimizer node with an adam_mode attribute; onnxruntime changed."
        )
    onnx.save(model, str(path))


def _fp32_scales(model: nn.Module) -> None:
    """Store int4 layers' fp16 group scales as fp32, in place: ORT 1.19's checkpoint cannot hold
    an fp16 tensor ("Unsupported data type: 10" at ``load_checkpoint``). The values are the same
    (fp16 -> fp32 is exact); the int4 backbone grows from ~0.56 to ~0.63 bytes a weight with groups
    of 32. Left in place so the manifest's backbone bytes count what the checkpoint holds (the
    model is the export's own copy)."""
    from mobile_peft.quant import QuantLinear

    for layer in model.modules():
        if isinstance(layer, QuantLinear) and layer.scales.dtype == torch.float16:
            layer.scales = layer.scales.float()


def export_onnx(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    out_dir: str | Path,
    optimizer: Any,
) -> dict[str, Any]:
    """capture -> artifacts -> AdamW mode -> IR fix; returns what the manifest records. The
    inference graph is made from the trained state (:meth:`OrtTrainer.export_inference`,
    ``Module.export_model_for_inferencing`` on device), not shipped: it would duplicate the
    backbone."""
    _require_ort_training()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / "_base_training.onnx"
    _fp32_scales(model)
    capture(
        EvalWrapper(model),
        inputs,
        input_names,
        [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS],
        base,
        training=True,
    )
    trainable = [f"model.{name}" for name in adapter_parameters(model)]
    try:
        artifacts(base, trainable, out_dir, optimizer, quantized_weights(model))
    finally:
        base.unlink(missing_ok=True)
    files = [
        contract.ONNX_TRAINING_FILE,
        contract.ONNX_EVAL_FILE,
        contract.ONNX_OPTIMIZER_FILE,
        contract.ONNX_CHECKPOINT_FILE,
    ]
    methods = {
        MethodKey.TRAINING_MODEL: contract.ONNX_TRAINING_FILE,
        MethodKey.EVAL_MODEL: contract.ONNX_EVAL_FILE,
        MethodKey.OPTIMIZER_MODEL: contract.ONNX_OPTIMIZER_FILE,
        MethodKey.CHECKPOINT: contract.ONNX_CHECKPOINT_FILE,
        MethodKey.OUTPUTS: [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS],
        "inference_model": f"export after training: Module.export_model_for_inferencing({contract.ONNX_INFERENCE_FILE!r}, outputs)",
        "opset": contract.ONNX_OPSET,
        "ir_version": contract.ONNX_IR_VERSION,
        "onnxruntime_training_version": "1.19.2",
    }
    return {"files": files, "methods": methods}


class OrtTrainer:
    """Drive a bundle's ORT training artifacts (``onnxruntime.training.api``), as a phone does."""

    def __init__(self, bundle: str | Path, lr: float) -> None:
        _require_ort_training()
        import onnxruntime
        from onnxruntime.training.api import CheckpointState, Module, Optimizer

        onnxruntime.set_default_logger_severity(3)  # errors only: its INFO lines flood test logs

        bundle = Path(bundle)
        self.state = CheckpointState.load_checkpoint(str(bundle / contract.ONNX_CHECKPOINT_FILE))
        self.module = Module(
            str(bundle / contract.ONNX_TRAINING_FILE), self.state, str(bundle / contract.ONNX_EVAL_FILE)
        )
        self.optimizer = Optimizer(str(bundle / contract.ONNX_OPTIMIZER_FILE), self.module)
        self.optimizer.set_learning_rate(lr)

    def step(self, inputs: Sequence[torch.Tensor]) -> float:
        self.module.train()
        loss, _ = self.module(*[t.numpy() for t in inputs])
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return float(loss)

    def evaluate(self, inputs: Sequence[torch.Tensor]) -> tuple[float, torch.Tensor]:
        """(loss, logits) of the eval model at the current weights."""
        self.module.eval()
        loss, logits = self.module(*[t.numpy() for t in inputs])
        return float(loss), torch.from_numpy(logits)

    def parameter(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.state.parameters[name].data.copy())

    def export_inference(self, path: str | Path) -> Path:
        """An inference graph (outputs: loss, logits) holding the trained weights."""
        self.module.export_model_for_inferencing(str(path), [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS])
        fix_ir_versions([Path(path)])
        return Path(path)
