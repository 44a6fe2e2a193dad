"""The ONNX Runtime training engine (``onnxruntime.training.api``), as a phone's
``OrtTrainingSession`` (Android) / ``ORTTrainingSession`` (iOS) runs it.

The bundle's artifacts carry the optimiser (AdamW in ``torch.optim.AdamW`` mode), so a step is
``module(*inputs)`` (forward + backward, gradients accumulate in the checkpoint state),
``optimizer.step()``, ``module.lazy_reset_grad()``. The checkpoint state holds the adapter tensors,
their gradients and the optimiser moments; ``CheckpointState.save_checkpoint(...,
include_optimizer_state=True)`` writes all of it, which is what a resumable run stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mobile_peft.core.contract import MethodKey, OptimizerKey
from mobile_peft.core.errors import MissingExtraError

from .bundle import Bundle
from .engine import PARAM_PREFIX, EngineState, check_tensors

__all__ = ["ORT_STATE", "OrtEngine"]

ORT_STATE = "ort_checkpoint"


class OrtEngine:
    """ONNX Runtime training artifacts of a bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, lr: float | None = None) -> None:
        try:
            import onnxruntime
            from onnxruntime.training.api import CheckpointState
        except ImportError:
            raise MissingExtraError("onnxruntime-training", "onnx", "Training an onnx bundle") from None
        onnxruntime.set_default_logger_severity(3)
        self.bundle = bundle
        self.names = [t.name for t in bundle.trainable]
        self.lr = float(lr if lr is not None else bundle.optimizer[OptimizerKey.LR])
        methods = bundle.methods
        self._files = {
            "training": bundle.file(methods[MethodKey.TRAINING_MODEL]),
            "eval": bundle.file(methods[MethodKey.EVAL_MODEL]),
            "optimizer": bundle.file(methods[MethodKey.OPTIMIZER_MODEL]),
        }
        self._steps = 0
        self._open(CheckpointState.load_checkpoint(str(bundle.file(methods[MethodKey.CHECKPOINT]))))

    def _open(self, state) -> None:  # noqa: ANN001
        from onnxruntime.training.api import Module, Optimizer

        self._checkpoint = state
        check_tensors(self.bundle, {name: np.asarray(param.data) for name, param in state.parameters if param.requires_grad})
        self.module = Module(str(self._files["training"]), state, str(self._files["eval"]))
        self.optimizer = Optimizer(str(self._files["optimizer"]), self.module)
        self.optimizer.set_learning_rate(self.lr)
        self._grads: dict[str, np.ndarray] = {}

    def forward_backward(self, inputs: Sequence[np.ndarray]) -> float:
        self.module.train()
        outputs = self.module(*[np.ascontiguousarray(x) for x in inputs])
        loss = outputs[0] if isinstance(outputs, list | tuple) else outputs
        self._grads = {}
        return float(loss)

    def step(self) -> None:
        self.optimizer.step()
        self.module.lazy_reset_grad()
        self._steps += 1

    def discard(self) -> None:
        self.module.lazy_reset_grad()  # ORT accumulates gradients in the checkpoint state
        self._grads = {}

    def parameters(self) -> dict[str, np.ndarray]:
        """Copies of the adapter tensors (ORT owns the buffers; write back with :meth:`set_parameters`)."""
        return {n: np.array(self._checkpoint.parameters[n].data) for n in self.names}

    def gradients(self) -> dict[str, np.ndarray]:
        if not self._grads:
            self._grads = {n: np.array(self._checkpoint.parameters[n].grad) for n in self.names}
        return self._grads

    def set_parameters(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self._checkpoint.parameters[name].data = np.ascontiguousarray(value, dtype=np.float32)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
        self.module.eval()
        loss, logits = self.module(*[np.ascontiguousarray(x) for x in inputs])[:2]
        return float(loss), np.asarray(logits)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state(self) -> EngineState:
        """The adapter tensors (for readers of the checkpoint) and ORT's own checkpoint file, which
        also holds the optimiser moments."""
        from onnxruntime.training.api import CheckpointState

        def write(directory: Path) -> None:
            CheckpointState.save_checkpoint(
                self._checkpoint, str(Path(directory) / ORT_STATE), include_optimizer_state=True
            )

        tensors = {PARAM_PREFIX + k: v for k, v in self.parameters().items()}
        return EngineState(tensors, self._steps, write)

    def restore(self, directory: Path, tensors: dict[str, np.ndarray], optimizer_step: int) -> None:
        from onnxruntime.training.api import CheckpointState

        self._open(CheckpointState.load_checkpoint(str(Path(directory) / ORT_STATE)))
        self._steps = int(optimizer_step)
