"""ExecuTorch export: one ``.pte`` (joint forward+backward ``forward`` method + ``eval`` method,
quantised frozen backbone as constants) and one ``.ptd`` holding only the adapter tensors.

Stages, each callable alone::

    capture(wrapper, inputs)        torch.export.export(strict=False)       -> ExportedProgram
    joint_graph(ep)                 _export_forward_backward + op rewrites  -> joint ExportedProgram
    recompute_frozen(joint)         frozen-weight values recomputed in the backward (memory)
    simplify(ep)                    value-preserving rewrites (portable-kernel time)
    lower({method: ep}, xnnpack)    to_edge_transform_and_lower (XNNPACK)   -> EdgeProgramManager
    serialise(edge, out_dir)        to_executorch(external_mutable_weights) -> model.pte + adapters.ptd

XNNPACK: a plain ``XnnpackPartitioner()`` delegates nothing in a joint graph (its weights are not
static); ``force_non_static_weights_for_f32_linear=True`` delegates the fp32 linears (DESIGN.md:
a toy step went from 34x to 1.9x eager), so it is the default.

Running it (:class:`PteTrainer`): ``executorch.extension.training``'s Python loader takes no
``.ptd``, so we load with ``portable_lib._load_for_executorch(pte, ptd)`` and wrap the module in
``executorch.extension.training.TrainingModule`` (its ``forward_backward`` reads the
``__et_training_*`` index methods and returns the parameter outputs uncloned, so in-place updates
reach the weights the next step uses) - the same loop as ExecuTorch's
``llm_pte_finetuning/runner.py`` and the C++/Kotlin ``TrainingModule.load(pte, ptd)``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mobile_peft.core import contract
from mobile_peft.core.errors import MissingExtraError

from . import _delegate_passes, _edge_passes, _fuse, _lookups, _planning, _retrace
from ._recompute import recompute_activations, recompute_frozen
from ._rewrites import simplify

__all__ = [
    "PteOptions",
    "PteTrainer",
    "capture",
    "export_pte",
    "joint_graph",
    "lower",
    "no_stack_traces",
    "recompute_frozen",
    "serialise",
    "simplify",
]

logger = logging.getLogger(__name__)


def _require_executorch() -> None:
    try:
        import executorch.exir  # noqa: F401
    except ImportError:
        raise MissingExtraError("executorch", "executorch", "Exporting a .pte bundle") from None


@contextlib.contextmanager
def no_stack_traces() -> Iterator[None]:
    """Within the block, tracing records no Python stack trace per graph node
    (``torch.fx.config.do_not_emit_stack_traces``). Each one is a ``CapturedTraceback`` of the
    tracer's own stack, 16.8 s of the full ``smolvlm-256m`` LoRA export (capture, joint graph and
    the edge dialect's retraces); the ``.pte`` does not hold them (ExecuTorch emits stack traces
    only with ``emit_stacktrace``, off), so they only served error messages about nodes."""
    import torch.fx.config

    before = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = before


def capture(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """Stage 1: trace ``module`` on ``inputs`` (static shapes)."""
    return torch.export.export(module, inputs, strict=False)


def _rewrite_empty_permuted(ep: torch.export.ExportedProgram) -> None:
    """``aten::empty_permuted`` (from the gated-MLP backward) has no ExecuTorch kernel; an
    uninitialised contiguous ``empty`` of the same logical shape is equivalent."""
    graph = ep.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.empty_permuted.default:
            size = node.args[0]
            with graph.inserting_before(node):
                new = graph.call_function(
                    torch.ops.aten.empty.memory_format,
                    (size,),
                    {
                        k: v
                        for k, v in node.kwargs.items()
                        if k in ("dtype", "device", "layout", "pin_memory")
                    },
                )
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
    ep.graph_module.recompile()


def joint_graph(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Stage 2: the joint forward+backward graph (outputs: loss, gradients, parameters)."""
    from torch.export.experimental import _export_forward_backward

    joint = _export_forward_backward(ep)
    _rewrite_empty_permuted(joint)
    return joint


# What goes to XNNPACK (partitioner config class names). The matrix multiplies first: measured on
# the tiny test model (2 cores), linear-only delegation lowers in 18 s with 13.7 ms/step; every
# XNNPACK config (softmax excluded: a delegated softmax whose output the backward re-reads becomes
# a pass-through output XNNPACK rejects, "Output node ... is already in the inputs") lowers in 33 s
# for 12.0 ms/step. Then the joint graph's transposes, the largest ExecuTorch kernel left after the
# graph rewrites, and attention's batched matmuls (``mobile-peft bench levers``, tiny LoRA batch 8:
# 51.6 -> 31.4 ms per step). Batched matmuls were kept out for a while because, delegated with the
# transposes, they enlarged the planned arena (tiny 15.0 -> 22.1 MiB); that came from delegates
# joining partitions far back in the graph, which the partitioner no longer allows
# (``_partition._MAX_GAP``), and with the identity copies dropped the same levers run now gives
# 13.7 MiB with them against 14.0 without, and 30.7 against 32.0 ms per step. Then softmax, the
# exact GELU (:class:`._partition.ExactGeluConfig`), tanh and sigmoid: once the patch
# convolution was a matmul (:func:`simplify`), attention's softmax and SigLIP's GELU were the
# largest ExecuTorch kernels left in ``smolvlm-256m`` (ETDump); the softmax that used to come back
# as a pass-through output now lowers. Elementwise arithmetic (mul/add/sub) delegated as well
# measured 9 % faster but a 25 % larger arena on ``smolvlm-256m`` cut to 2+4 layers (544 vs 435
# MiB), so it stays in ExecuTorch's kernels.
MATMUL_OPS = ("LinearConfig", "AddmmConfig", "MMConfig")
TRANSPOSE_OPS = (*MATMUL_OPS, "PermuteConfig")
BMM_OPS = (*TRANSPOSE_OPS, "BMMConfig")
XNNPACK_OPS = (*BMM_OPS, "SoftmaxConfig", "GeluConfig", "TanhConfig", "SigmoidConfig")


@dataclass(frozen=True)
class PteOptions:
    """How :func:`export_pte` builds the program; the defaults are the shipped export, and the
    switches exist to measure what each lever buys (``mobile-peft bench levers``).

    ``xnnpack``: delegate to XNNPACK (False: every op in ExecuTorch's portable kernels).
    ``xnnpack_ops``: the partitioner configs that delegate, by class name (:data:`XNNPACK_OPS`;
    :data:`MATMUL_OPS`: matmuls only). ``rewrites``: the value-preserving graph rewrites of
    :func:`simplify`. ``recompute_frozen``, ``recompute_activations``: :func:`recompute_frozen`
    and :func:`recompute_activations` on the training graph (the latter off by default: it trades
    step time for memory -- tiny LoRA batch 8 30.7 -> 34.6 ms for 13.7 -> 10.3 MiB of arena; it is
    what lets ``smolvlm-256m`` with the vision tower adapted train on a 1.2 GB phone).
    ``keep_order``: delegate fusion keeps the traced node order (:func:`lower`)."""

    xnnpack: bool = True
    xnnpack_ops: tuple[str, ...] = XNNPACK_OPS
    rewrites: bool = True
    recompute_frozen: bool = True
    recompute_activations: bool = False
    keep_order: bool = True

    def fingerprint(self) -> str:
        """Eight hex digits that change with any switch: caches of exported bundles key on it, so
        a bundle exported before a lever changed is not reused."""
        import hashlib

        switches = sorted((f.name, getattr(self, f.name)) for f in fields(self))
        return hashlib.sha256(repr(switches).encode()).hexdigest()[:8]


def lower(
    programs: dict[str, torch.export.ExportedProgram],
    xnnpack: bool = True,
    fast: bool = True,
    xnnpack_ops: tuple[str, ...] = XNNPACK_OPS,
    keep_order: bool = True,
) -> Any:
    """Stage 3: edge dialect, with the fp32 linears delegated to XNNPACK when ``xnnpack``.

    ``fast``: the same program in less time -- fuse delegates without re-copying and
    re-generating the whole graph per delegate (:mod:`._fuse`: time linear in the graph), skip the
    partitioner's decomposition check where it has nothing to check
    (:meth:`._partition.LinearTimeXnnpackPartitioner.ops_to_not_decompose`), and run XNNPACK's
    per-delegate passes only where they change something (:mod:`._delegate_passes`), skip the
    functionalisation retrace of a program that is already functional (:mod:`._retrace`), and run
    the edge dialect's per-node passes fused into fewer retraces (:mod:`._edge_passes`). False runs
    ExecuTorch's own lowering, for comparison. ``xnnpack_ops``: the XNNPACK partitioner configs
    that delegate, by class name (default :data:`XNNPACK_OPS`; :data:`MATMUL_OPS`: matmuls only).
    ``keep_order`` (with ``fast``): fusing keeps the graph's node order where it can
    instead of ExecuTorch's breadth-first one (:func:`._fuse.topological_order`), which decides
    what the memory plan keeps alive together."""
    _require_executorch()
    from executorch.exir import EdgeCompileConfig, to_edge, to_edge_transform_and_lower

    config = EdgeCompileConfig(_check_ir_validity=False)
    if not xnnpack:
        return to_edge(programs, compile_config=config)
    from ._partition import LinearTimeXnnpackPartitioner, partitioner_configs

    configs = partitioner_configs(xnnpack_ops)
    partitioner = LinearTimeXnnpackPartitioner(
        configs=configs, force_non_static_weights_for_f32_linear=True, fast=fast
    )
    with contextlib.ExitStack() as shortcuts:
        if fast:
            shortcuts.enter_context(_fuse.fast_fusion(stable=keep_order))
            shortcuts.enter_context(_delegate_passes.only_changing_passes())
            shortcuts.enter_context(_retrace.skip_functional_retrace())
            shortcuts.enter_context(_edge_passes.fused_edge_passes())
        return to_edge_transform_and_lower(programs, partitioner=[partitioner], compile_config=config)


def serialise(edge: Any, out_dir: str | Path, fast: bool = True) -> tuple[Path, Path]:
    """Stage 4: write :data:`~.contract.PTE_FILE` and :data:`~.contract.PTD_FILE` (only the
    trainable tensors, ``external_mutable_weights``) into ``out_dir``. ``fast``: the same bytes
    in less time -- memory planning reads the graph signature's name maps once instead of once
    per tensor, and the greedy plan indexes each arena slot's allocations
    (:func:`._planning.memory_planning_pass`), delegates are not run again on fake tensors (their
    traced outputs are known) and spec propagation and emission read the signature's name maps
    once (:func:`._lookups.serialisation_lookups`), and the dim-order legalisation retraces a method
    only when it would insert a copy (:func:`._edge_passes.idle_dim_order_pass_skipped`); False:
    ExecuTorch's own passes."""
    from executorch.exir import ExecutorchBackendConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = ExecutorchBackendConfig(external_mutable_weights=True)
    if fast:
        config.memory_planning_pass = _planning.memory_planning_pass()
    with contextlib.ExitStack() as shortcuts:
        if fast:
            shortcuts.enter_context(_lookups.serialisation_lookups(edge))
            shortcuts.enter_context(_edge_passes.idle_dim_order_pass_skipped())
        program = edge.to_executorch(config=config)
    pte = out_dir / contract.PTE_FILE
    pte.write_bytes(program.buffer)
    with tempfile.TemporaryDirectory() as tmp:
        program.write_tensor_data_to_file(tmp)
        written = sorted(Path(tmp).glob("*.ptd"))
        if len(written) != 1:
            raise RuntimeError(
                f"ExecuTorch wrote {len(written)} .ptd files ({[p.name for p in written]}); expected one."
            )
        ptd = out_dir / contract.PTD_FILE
        shutil.move(str(written[0]), ptd)
    return pte, ptd


def export_pte(
    train_module: torch.nn.Module,
    eval_module: torch.nn.Module,
    train_inputs: tuple,
    eval_inputs: tuple,
    out_dir: str | Path,
    options: PteOptions = PteOptions(),
) -> dict[str, Any]:
    """capture -> joint graph -> (:func:`recompute_frozen`, :func:`simplify`,
    :func:`recompute_activations`) -> lower -> serialise, as ``options`` say; returns what the
    manifest records."""
    _require_executorch()
    with no_stack_traces():  # not in the .pte; 3 % of a full-size export
        joint = joint_graph(capture(train_module, train_inputs))
        evaluation = capture(eval_module, eval_inputs)
        if options.recompute_frozen:
            recompute_frozen(joint)
        if options.rewrites:
            simplify(joint)
            simplify(evaluation)
        if options.recompute_activations:
            recompute_activations(joint)
        edge = lower(
            {contract.METHOD_TRAIN: joint, contract.METHOD_EVAL: evaluation},
            xnnpack=options.xnnpack,
            xnnpack_ops=options.xnnpack_ops,
            keep_order=options.keep_order,
        )
        pte, ptd = serialise(edge, out_dir)
    logger.info("wrote %s (%d B) and %s (%d B)", pte, pte.stat().st_size, ptd, ptd.stat().st_size)
    return {"files": [pte.name, ptd.name], "xnnpack": options.xnnpack}


class PteTrainer:
    """Drive a bundle's ``.pte`` + ``.ptd`` with plain SGD, as a phone does.

    ``inputs`` of :meth:`step` / :meth:`evaluate`: ``pixel_values, input_ids, labels`` and the
    rank masks in manifest order.
    """

    def __init__(self, pte: str | Path, ptd: str | Path) -> None:
        _require_executorch()
        from executorch.extension.pybindings.portable_lib import _load_for_executorch
        from executorch.extension.training import TrainingModule

        self.module = TrainingModule(_load_for_executorch(str(pte), str(ptd)))

    def forward_backward(self, inputs: Sequence[torch.Tensor]) -> float:
        return float(self.module.forward_backward(contract.METHOD_TRAIN, list(inputs))[0])

    @torch.no_grad()
    def step(self, inputs: Sequence[torch.Tensor], lr: float) -> float:
        """One SGD step ``p -= lr * g`` in place on the runtime's parameter tensors; returns the loss."""
        loss = self.forward_backward(inputs)
        grads = self.module.named_gradients()
        for name, param in self.module.named_parameters().items():
            param.sub_(lr * grads[name])
        return loss

    def parameters(self) -> dict[str, torch.Tensor]:
        """The runtime's trainable tensors (needs one :meth:`forward_backward` first)."""
        return self.module.named_parameters()

    def evaluate(
        self, inputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]
    ) -> tuple[float, torch.Tensor]:
        """``eval`` method: (loss, logits) at the given masks and adapter tensors."""
        loss, logits = self.module.model.run_method(contract.METHOD_EVAL, [*inputs, *weights])
        return float(loss), logits
