"""numpy optimisers over an engine's named parameters and gradients, updated in place.

* :class:`ExecuTorchSGD` is ExecuTorch's own SGD (``executorch.extension.training.get_sgd_optimizer``,
  the C++ optimiser behind Kotlin's ``SGD.create``), stepping the runtime's live weight tensors; it
  is what a ``pte`` run uses. Without momentum it is stateless, so checkpoints stay exact.
* :class:`SGD` is the same update in numpy (``g += wd * p; b = mu * b + g (b = g first);
  p -= lr * b``), used with momentum (its buffers are checkpointed) and by tests as the reference.
* :class:`AdamW` reproduces ``torch.optim.AdamW`` (single-tensor path, fp32) step for step:
  ``p *= 1 - lr * wd; m = lerp(m, g, 1 - b1); v = b2 * v + (1 - b2) g^2;
  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. The test compares both against
  torch to 1e-6 over several steps.

State (``state_dict``) is plain numpy arrays plus the step count, so checkpoints stay format-free.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from mobile_peft.core.errors import ConfigError

__all__ = ["OPTIMIZERS", "SGD", "AdamW", "ExecuTorchSGD", "Optimizer", "make_optimizer"]


class Optimizer(Protocol):
    """Updates named parameters in place from named gradients; state is numpy + a step count."""

    name: str

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def state_bytes(self, numel: int) -> int: ...


class SGD:
    name = "sgd"

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.step_count = 0
        self.buffers: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.step_count += 1
        lr = np.float32(self.lr)
        for name, p in params.items():
            g = grads[name].astype(np.float32, copy=True)
            if self.weight_decay:
                g += np.float32(self.weight_decay) * p
            if self.momentum:
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = g.copy()
                else:
                    buf *= np.float32(self.momentum)
                    buf += g
                g = buf
            p -= lr * g

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "tensors": {f"momentum/{k}": v for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.buffers = {
            k.split("/", 1)[1]: np.array(v, dtype=np.float32)
            for k, v in state["tensors"].items()
            if k.startswith("momentum/")
        }

    def state_bytes(self, numel: int) -> int:
        return 4 * numel if self.momentum else 0


class ExecuTorchSGD:
    """ExecuTorch's runtime SGD (no momentum) over the engine's live parameter tensors."""

    name = "sgd"

    def __init__(self, lr: float) -> None:
        self.lr = float(lr)
        self.step_count = 0
        self._optimizer = None
        self._params: dict[str, np.ndarray] | None = None

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        import torch
        from executorch.extension.training import get_sgd_optimizer

        if (
            self._optimizer is None
            or self._params is None
            or any(params[k] is not self._params[k] for k in params)
        ):
            # Bind to the runtime's weight buffers (numpy views of them share memory with torch.from_numpy).
            self._params = dict(params)
            self._optimizer = get_sgd_optimizer(
                {k: torch.from_numpy(v) for k, v in params.items()}, self.lr, 0.0, 0.0, 0.0, False
            )
        self.step_count += 1
        self._optimizer.step({k: torch.from_numpy(np.ascontiguousarray(g)) for k, g in grads.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "tensors": {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])

    def state_bytes(self, numel: int) -> int:
        return 0


class AdamW:
    name = "adamw"

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        self.lr, self.beta1, self.beta2 = float(lr), float(betas[0]), float(betas[1])
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.step_count = 0
        self.exp_avg: dict[str, np.ndarray] = {}
        self.exp_avg_sq: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.step_count += 1
        t = self.step_count
        step_size = self.lr / (1 - self.beta1**t)
        bias2_sqrt = math.sqrt(1 - self.beta2**t)
        f32 = np.float32
        for name, p in params.items():
            g = grads[name].astype(np.float32, copy=False)
            m = self.exp_avg.setdefault(name, np.zeros_like(p))
            v = self.exp_avg_sq.setdefault(name, np.zeros_like(p))
            if self.weight_decay:
                p *= f32(1 - self.lr * self.weight_decay)
            m += (g - m) * f32(1 - self.beta1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= f32(self.beta2)
            v += f32(1 - self.beta2) * g * g
            denom = np.sqrt(v) / f32(bias2_sqrt) + f32(self.eps)
            p -= f32(step_size) * (m / denom)

    def state_dict(self) -> dict[str, Any]:
        tensors = {f"exp_avg/{k}": v for k, v in self.exp_avg.items()}
        tensors.update({f"exp_avg_sq/{k}": v for k, v in self.exp_avg_sq.items()})
        return {"step": self.step_count, "tensors": tensors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.exp_avg, self.exp_avg_sq = {}, {}
        for key, value in state["tensors"].items():
            kind, _, name = key.partition("/")
            target = {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}.get(kind)
            if target is not None:
                target[name] = np.array(value, dtype=np.float32)

    def state_bytes(self, numel: int) -> int:
        return 8 * numel


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(
    name: str, defaults: dict[str, Any], lr: float | None = None, runtime: str | None = None
) -> SGD | AdamW | ExecuTorchSGD:
    """The optimiser ``name`` with the manifest's ``optimizer`` defaults (``lr`` overrides);
    ``runtime="pte"`` gives ExecuTorch's own SGD when there is no momentum or weight decay."""
    lr = float(lr if lr is not None else defaults.get("lr", 1e-2))
    plain = not float(defaults.get("momentum", 0.0) or 0.0) and not float(
        defaults.get("weight_decay", 0.0) or 0.0
    )
    if name == "sgd" and runtime == "pte" and plain:
        return ExecuTorchSGD(lr)
    if name == "sgd":
        return SGD(
            lr,
            momentum=float(defaults.get("momentum", 0.0)),
            weight_decay=float(defaults.get("weight_decay", 0.0)),
        )
    if name == "adamw":
        betas = tuple(defaults.get("betas", (0.9, 0.999)))
        return AdamW(
            lr,
            betas=(float(betas[0]), float(betas[1])),
            eps=float(defaults.get("eps", 1e-8)),
            weight_decay=float(defaults.get("weight_decay", 0.01)),
        )
    raise ConfigError(f"optimizer {name!r} is not available in the runtime; expected one of {OPTIMIZERS}.")
