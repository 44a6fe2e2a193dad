"""The training step's memory lower bound, computed at export time and recorded in the manifest
(``memory_bound``, :class:`~mobile_peft.core.contract.MemoryBoundKey`)::

    bound = backbone bytes (frozen weights as stored: int8/int4 values + scales, norms, embeddings)
          + trainable bytes x (1 weight + 1 gradient + optimiser states: SGD 0, momentum 1, AdamW 2)
          + activation bytes (what the backward pass must keep)

The activations are counted on one eager PyTorch step at the bundle's batch size, with only the
trainable tensors requiring grad, so autograd keeps exactly what their gradients need (nothing
below the lowest adapter, nothing for a frozen tower without adapters): every tensor autograd
saves passes through :func:`torch.autograd.graph.saved_tensors_hooks`, and the bytes of the unique
storages behind them are summed (a view and its base, or one tensor saved by two ops, count once).

What does not count, by storage identity (never by shape or name):

* the model's parameters and buffers: the frozen weights are the backbone term, the adapter
  tensors the trainable term, the rank masks are inputs;
* the dequantised copies of frozen weights: every tensor a :class:`~mobile_peft.quant.QuantLinear`
  returns from ``dequantized_weight()`` during the step is recorded (and held, so its address
  cannot be reused by a later activation); ``F.linear`` saves that fp32 copy for the input
  gradient, but a runtime can recompute it from the int8 values in the backward.

Everything else saved counts: layer inputs of adapted layers, attention probabilities, norm
statistics, the loss's targets. A memory-efficient runtime can go below eager by recomputing some
of them (activation checkpointing), so this is the bound of the eager schedule, not an absolute one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mobile_peft.adapters import adapter_parameters
from mobile_peft.core.manifest import memory_bound_section
from mobile_peft.quant import QuantLinear

from .formats import ExportJob, example_inputs
from .wrappers import TrainingWrapper

__all__ = ["COUNTED_BY", "adapter_step_terms", "head_step_terms", "memory_bound", "saved_activation_bytes"]

COUNTED_BY = "eager saved_tensors_hooks, unique storages; parameters, buffers and dequantised frozen weights excluded"


def _storage(t: torch.Tensor) -> tuple[int, int] | None:
    """(address, bytes) of the storage behind ``t``; None for tensors without one."""
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    return storage.data_ptr(), storage.nbytes()


@contextmanager
def _recording_dequantised(model: nn.Module, into: list[torch.Tensor]) -> Iterator[None]:
    """Record (and hold) every weight a ``QuantLinear`` of ``model`` dequantises inside the block."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]

    def wrap(layer: QuantLinear) -> Callable[..., torch.Tensor]:
        def dequantized_weight(rows: slice | None = None) -> torch.Tensor:
            weight = QuantLinear.dequantized_weight(layer, rows)
            into.append(weight)
            return weight

        return dequantized_weight

    for layer in layers:
        layer.dequantized_weight = wrap(layer)  # an instance attribute shadows the method
    try:
        yield
    finally:
        for layer in layers:
            del layer.dequantized_weight


def saved_activation_bytes(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the unique storages autograd saves for the backward of ``loss_fn()`` (which runs
    ``model``'s forward and returns the loss), parameters, buffers and dequantised frozen weights
    excluded (see the module docstring). Runs the backward too; the gradients it leaves are
    cleared."""
    excluded = {s[0] for t in [*model.parameters(), *model.buffers()] if (s := _storage(t)) is not None}
    dequantised: list[torch.Tensor] = []
    saved: dict[int, int] = {}
    held: list[torch.Tensor] = []  # keeps every saved address alive until the count is done

    def pack(t: torch.Tensor) -> torch.Tensor:
        held.append(t)
        s = _storage(t)
        if s is not None:
            saved.setdefault(s[0], s[1])
        return t

    with torch.enable_grad(), _recording_dequantised(model, dequantised):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn()
        excluded |= {s[0] for t in dequantised if (s := _storage(t)) is not None}
        total = sum(size for address, size in saved.items() if address not in excluded)
        loss.backward()
    for p in model.parameters():
        p.grad = None
    return total


def adapter_step_terms(job: ExportJob) -> tuple[int, int]:
    """(trainable bytes, activation bytes) of the joint graph's step: adapters inside the backbone,
    the exported ``TrainingWrapper`` on the export's example inputs at its batch size."""
    model = job.model
    wrapper = TrainingWrapper(model)
    inputs = (*example_inputs(model, job.batch_size, job.pad_id), *wrapper.example_masks())
    trainable = sum(p.numel() * p.element_size() for p in adapter_parameters(model).values())
    return trainable, saved_activation_bytes(model, lambda: wrapper(*inputs)[0])


def head_step_terms(job: ExportJob, answers: int) -> tuple[int, int]:
    """(trainable bytes, activation bytes) of a classifier head ``features [B, D] -> [B, answers]``
    trained with softmax cross-entropy over a frozen feature extractor (the Core ML bundle): the
    backbone runs without gradients, so only the head's own step keeps anything."""
    hidden = int(job.model.config.text["hidden_size"])
    head = nn.Linear(hidden, answers)
    features = torch.zeros(job.batch_size, hidden)
    labels = torch.zeros(job.batch_size, dtype=torch.long)
    trainable = sum(p.numel() * p.element_size() for p in head.parameters())
    return trainable, saved_activation_bytes(head, lambda: nn.functional.cross_entropy(head(features), labels))


def memory_bound(job: ExportJob, backbone_bytes: int, terms: tuple[int, int], optimizer: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``memory_bound`` section from the step's ``terms`` (trainable, activation bytes)."""
    trainable, activations = terms
    return memory_bound_section(backbone_bytes, trainable, activations, optimizer, job.batch_size, COUNTED_BY)
