"""Engines: the one place the runtime touches a format's runtime library.

An engine runs the bundle's joint training graph and exposes its trainable tensors and their
gradients as numpy arrays, in the manifest's ``trainable`` order::

    loss = engine.forward_backward([pixel_values, input_ids, labels, *masks])
    engine.step()        # the optimiser (numpy / ExecuTorch's SGD for pte, the artifact's for onnx)
    engine.parameters()  # {name: array}
    engine.gradients()   # {name: array}: of the last forward_backward
    loss, logits = engine.evaluate([pixel_values, input_ids, labels, *masks])
    engine.state()       # what a checkpoint stores; engine.restore(...) reads it back

:class:`PteEngine` drives ExecuTorch exactly as ExecuTorch's ``llm_pte_finetuning/runner.py`` and
the C++/Kotlin ``TrainingModule.load(pte, ptd)`` do: ``_load_for_executorch(pte, ptd)`` (the
``.ptd`` holds only the adapter tensors), read the ``__et_training_*`` index methods, run the joint
method with ``clone_outputs=False`` so the parameter outputs alias the weights the next step uses.
ExecuTorch's pybindings take torch tensors as inputs; nothing here uses autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mobile_peft.core import contract
from mobile_peft.core.contract import MethodKey
from mobile_peft.core.errors import BundleError, ConfigError, MissingExtraError

from .bundle import Bundle
from .optim import Optimizer, make_optimizer

__all__ = ["PARAM_PREFIX", "Engine", "EngineState", "PteEngine", "make_engine"]

PARAM_PREFIX = "param/"  # checkpoint tensor names of the trainable tensors


@dataclass
class EngineState:
    """What a checkpoint stores for an engine: tensors (the trainable ones under
    :data:`PARAM_PREFIX`, then the optimiser's), the optimiser's step count, and files the format
    keeps in its own layout (written into the checkpoint directory before it is committed)."""

    tensors: dict[str, np.ndarray]
    optimizer_step: int
    write_files: Callable[[Path], None] | None = field(default=None)


class Engine(Protocol):
    names: list[str]

    def forward_backward(self, inputs: Sequence[np.ndarray]) -> float: ...

    def step(self) -> None: ...

    def discard(self) -> None:
        """Drop the last gradients without a step (a step with a non-finite loss or gradient)."""
        ...

    def parameters(self) -> dict[str, np.ndarray]: ...

    def gradients(self) -> dict[str, np.ndarray]: ...

    def set_parameters(self, values: dict[str, np.ndarray]) -> None: ...

    def evaluate(self, inputs: Sequence[np.ndarray]) -> tuple[float, np.ndarray]: ...

    def state(self) -> EngineState: ...

    def restore(self, directory: Path, tensors: dict[str, np.ndarray], optimizer_step: int) -> None: ...


def check_tensors(bundle: Bundle, tensors: dict[str, np.ndarray]) -> None:
    """The runtime's trainable tensors are the manifest's: same names, shapes and dtypes (so a
    bundle whose artifacts disagree with its manifest fails before training, not mid-run)."""
    expected = {t.name: t for t in bundle.trainable}
    problems = [f"the artifact has no trainable tensor {n!r}" for n in sorted(set(expected) - set(tensors))]
    problems += [f"the artifact trains {n!r}, which the manifest does not list" for n in sorted(set(tensors) - set(expected))]
    for name in sorted(set(expected) & set(tensors)):
        t, got = expected[name], tensors[name]
        if tuple(got.shape) != t.shape or got.dtype.name != t.dtype:
            problems.append(f"{name}: the artifact has {tuple(got.shape)} {got.dtype.name}, the manifest {t.shape} {t.dtype}")
    if problems:
        raise BundleError(bundle.path, problems[:20])


def trained_parameters(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trainable tensors of a checkpoint's tensors."""
    return {k.removeprefix(PARAM_PREFIX): v for k, v in tensors.items() if k.startswith(PARAM_PREFIX)}


class PteEngine:
    """ExecuTorch ``model.pte`` + ``adapters.ptd`` (see the module docstring)."""

    def __init__(self, bundle: Bundle, optimizer: Optimizer) -> None:
        try:
            import torch
            from executorch.extension.pybindings.portable_lib import _load_for_executorch
        except ImportError:
            raise MissingExtraError("executorch", "executorch", "Training a .pte bundle") from None
        self._torch = torch
        self._bundle = bundle
        self.optimizer = optimizer
        methods = bundle.methods
        train = methods[MethodKey.TRAIN]
        self.method = train[MethodKey.METHOD]
        self.eval_method = methods[MethodKey.EVAL][MethodKey.METHOD]
        program = bundle.file(methods[MethodKey.PROGRAM])
        data = bundle.file(methods[MethodKey.TRAINABLE_DATA])
        self.module = _load_for_executorch(str(program), str(data))
        run = self.module.run_method
        self._grad_start = int(run(train[MethodKey.GRADIENTS_INDEX_METHOD], ())[0])
        self._param_start = int(run(train[MethodKey.PARAMETERS_INDEX_METHOD], ())[0])
        fqns = list(run(train[MethodKey.FQN_METHOD], ()))
        self.names = [t.name for t in bundle.trainable]
        if sorted(fqns) != sorted(self.names):
            raise ConfigError(
                f"the .pte trains {len(fqns)} tensors that do not match the manifest's {len(self.names)} trainable "
                f"names (e.g. {sorted(set(fqns) ^ set(self.names))[:3]}); the bundle is inconsistent, re-export it."
            )
        self._fqns = fqns
        self._params: dict[str, np.ndarray] | None = None
        self._grads: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] | None = None

    def _run(self, inputs: Sequence[np.ndarray]) -> list:
        tensors = [self._torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
        return self.module.run_method(self.method, tensors, clone_outputs=False)

    def forward_backward(self, inputs: Sequence[np.ndarray]) -> float:
        out = self._run(inputs)
        if self._params is None:
            # The runtime hands out its weight buffers only as outputs of a first run.
            self._params = {n: out[self._param_start + i].numpy() for i, n in enumerate(self._fqns)}
            check_tensors(self._bundle, self._params)
            if self._pending is not None:
                self.set_parameters(self._pending)
                self._pending = None
                out = self._run(inputs)
        # Gradients live in planned memory the next run overwrites: copy them out.
        self._grads = {n: out[self._grad_start + i].numpy().copy() for i, n in enumerate(self._fqns)}
        return float(out[0])

    def step(self) -> None:
        self.optimizer.step(self.parameters(), self.gradients())

    def discard(self) -> None:
        self._grads = {}  # gradients are outputs of each run: nothing accumulates

    def state(self) -> EngineState:
        optimizer = self.optimizer.state_dict()
        tensors = {PARAM_PREFIX + k: v for k, v in self.parameters().items()}
        return EngineState({**tensors, **optimizer["tensors"]}, int(optimizer["step"]))

    def restore(self, directory: Path, tensors: dict[str, np.ndarray], optimizer_step: int) -> None:
        self.set_parameters(trained_parameters(tensors))
        state = {k: v for k, v in tensors.items() if not k.startswith(PARAM_PREFIX)}
        self.optimizer.load_state_dict({"step": optimizer_step, "tensors": state})

    def parameters(self) -> dict[str, np.ndarray]:
        if self._params is None and self._pending is not None:
            return dict(self._pending)  # restored but not run yet (a resumed run that was complete)
        if self._params is None:
            raise ConfigError(
                "the .pte exposes its weights after the first forward_backward; run one step first."
            )
        return {n: self._params[n] for n in self.names}

    def gradients(self) -> dict[str, np.ndarray]:
        return {n: self._grads[n] for n in self.names}

    def set_parameters(self, values: dict[str, np.ndarray]) -> None:
        if self._params is None:
            self._pending = {n: np.array(v, dtype=np.float32) for n, v in values.items()}
            return
        for name, value in values.items():
            np.copyto(self._params[name], value)

    def ensure_parameters(self, inputs: Sequence[np.ndarray]) -> None:
        """Make the weights (and any pending values) live, running one joint step if needed."""
        if self._params is None:
            self.forward_backward(inputs)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
        """The ``eval`` method at the current weights (they are inputs after the masks)."""
        self.ensure_parameters(inputs)
        weights = [self._params[n] for n in self.names]
        tensors = [self._torch.from_numpy(np.ascontiguousarray(x)) for x in [*inputs, *weights]]
        loss, logits = self.module.run_method(self.eval_method, tensors)[:2]
        return float(loss), logits.numpy().copy()


def make_engine(bundle: Bundle, lr: float | None = None, optimizer: str | None = None) -> Engine:
    """The engine of ``bundle``'s format. ``lr`` overrides the manifest's learning rate;
    ``optimizer`` its optimiser (``pte`` only: an ``onnx`` artifact has its optimiser built in)."""
    name = optimizer or bundle.optimizer[contract.OptimizerKey.NAME]
    if bundle.format == contract.FORMAT_PTE:
        return PteEngine(bundle, make_optimizer(name, bundle.optimizer, lr, runtime=bundle.format))
    if bundle.format == contract.FORMAT_ONNX:
        if name != bundle.optimizer[contract.OptimizerKey.NAME]:
            raise ConfigError(
                f"an onnx bundle trains with the optimizer built into its artifact "
                f"({bundle.optimizer[contract.OptimizerKey.NAME]!r}); got --optimizer {name!r}."
            )
        from .ort import OrtEngine

        return OrtEngine(bundle, lr=lr)
    raise ConfigError(
        f"bundle format {bundle.format!r} has no on-device training loop here; the runtime trains "
        f"{contract.FORMAT_PTE!r} and {contract.FORMAT_ONNX!r} bundles (Core ML heads train with MLUpdateTask on iOS)."
    )
