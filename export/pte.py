"""ExecuTorch export: one ``.pte`` (joint forward+backward ``forward`` method + ``eval`` method,
quantised frozen backbone as constants) and one ``.ptd`` holding only the adapter tensors.

Stages, each callable alone::

    capture(wrapper, inputs)        torch.export.export(strict=False)       -> ExportedProgram
    joint_graph(ep)                 _export_forward_backward + op rewrites  -> joint ExportedProgram
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mobile_peft.core import contract
from mobile_peft.core.errors import ConfigError, MissingExtraError

from . import _fuse

__all__ = ["PteTrainer", "capture", "export_pte", "joint_graph", "lower", "serialise", "simplify"]

logger = logging.getLogger(__name__)


def _require_executorch() -> None:
    try:
        import executorch.exir  # noqa: F401
    except ImportError:
        raise MissingExtraError("executorch", "executorch", "Exporting a .pte bundle") from None


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


def _compose_permutes(ep: torch.export.ExportedProgram) -> int:
    """``permute(permute(x, p), q)`` -> ``x`` when the two cancel, else one ``permute(x, p∘q)``.

    The joint graph transposes a weight for the forward's ``mm`` and transposes it back for the
    backward's (``t(t(W))``, 203 of the 585 permutes in ``tiny``'s LoRA joint graph); every
    ExecuTorch ``permute_copy`` is a real copy (28 of the 61 ms per step in ExecuTorch's own
    kernels, ETDump, ``mobile-peft bench levers``). An output is never replaced by an input (an output must not alias an input).
    Returns how many permutes were rewritten."""
    graph = ep.graph_module.graph
    permute = torch.ops.aten.permute.default
    rewritten = 0
    for node in list(graph.nodes):
        inner = node.args[0] if node.op == "call_function" and node.target == permute else None
        if not (isinstance(inner, torch.fx.Node) and inner.op == "call_function" and inner.target == permute):
            continue
        p, q = list(inner.args[1]), list(node.args[1])
        composed = [p[i] for i in q]
        source = inner.args[0]
        if composed == list(range(len(composed))):
            if source.op == "placeholder" and any(u.op == "output" for u in node.users):
                continue
            node.replace_all_uses_with(source)
        else:
            with graph.inserting_before(node):
                single = graph.call_function(permute, (source, composed))
            single.meta = dict(node.meta)
            node.replace_all_uses_with(single)
        graph.erase_node(node)
        if not inner.users:
            graph.erase_node(inner)
        rewritten += 1
    ep.graph_module.recompile()
    return rewritten


def _small_powers_as_mul(ep: torch.export.ExportedProgram) -> int:
    """``pow(x, 1)`` -> ``x``, ``pow(x, 2)`` -> ``x * x``, ``pow(x, 3)`` -> ``x * x * x`` (RMSNorm's
    variance, tanh-GELU's cube and their derivatives): the portable ``pow`` kernel calls
    ``std::pow`` per element. Returns how many were rewritten."""
    graph = ep.graph_module.graph
    rewritten = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target == torch.ops.aten.pow.Tensor_Scalar):
            continue
        x, exponent = node.args[0], node.args[1]
        if exponent not in (1, 2, 3) or exponent == 1 and x.op == "placeholder":
            continue
        value = x
        with graph.inserting_before(node):
            for _ in range(int(exponent) - 1):
                value = graph.call_function(torch.ops.aten.mul.Tensor, (value, x))
                value.meta = dict(node.meta)
        node.replace_all_uses_with(value)
        graph.erase_node(node)
        rewritten += 1
    ep.graph_module.recompile()
    return rewritten


def simplify(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The graph rewrites that cut portable-kernel time without changing a value (in place)."""
    permutes, powers = _compose_permutes(ep), _small_powers_as_mul(ep)
    logger.debug("simplified: %d permute pairs composed, %d small powers as mul", permutes, powers)
    return ep


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
# for 12.0 ms/step. Then the joint graph's transposes and attention's batched matmuls, the largest
# ExecuTorch kernels left after the graph rewrites (``mobile-peft bench levers``: tiny LoRA batch 8,
# 62.4 -> 44.7 ms per step).
MATMUL_OPS = ("LinearConfig", "AddmmConfig", "MMConfig")
XNNPACK_OPS = (*MATMUL_OPS, "PermuteConfig", "BMMConfig")


def lower(
    programs: dict[str, torch.export.ExportedProgram],
    xnnpack: bool = True,
    fast_fusion: bool = True,
    xnnpack_ops: tuple[str, ...] = XNNPACK_OPS,
) -> Any:
    """Stage 3: edge dialect, with the fp32 linears delegated to XNNPACK when ``xnnpack``.

    ``fast_fusion``: fuse delegates without re-copying and re-generating the whole graph per
    delegate (:mod:`._fuse`; the same program, in time linear in the graph). False runs
    ExecuTorch's own fusion, for comparison. ``xnnpack_ops``: the XNNPACK partitioner configs
    that delegate, by class name (default :data:`XNNPACK_OPS`; :data:`MATMUL_OPS`: matmuls only)."""
    _require_executorch()
    from executorch.exir import EdgeCompileConfig, to_edge, to_edge_transform_and_lower

    config = EdgeCompileConfig(_check_ir_validity=False)
    if not xnnpack:
        return to_edge(programs, compile_config=config)
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS

    from ._partition import LinearTimeXnnpackPartitioner

    unknown = sorted(set(xnnpack_ops) - {c.__name__ for c in ALL_PARTITIONER_CONFIGS})
    if unknown:
        raise ConfigError(f"unknown XNNPACK partitioner config(s) {unknown}; expected names such as {list(XNNPACK_OPS)}.")
    configs = [c for c in ALL_PARTITIONER_CONFIGS if c.__name__ in xnnpack_ops]
    partitioner = LinearTimeXnnpackPartitioner(
        configs=configs, force_non_static_weights_for_f32_linear=True, defer_codegen=fast_fusion
    )
    with _fuse.fast_fusion() if fast_fusion else contextlib.nullcontext():
        return to_edge_transform_and_lower(programs, partitioner=[partitioner], compile_config=config)


def serialise(edge: Any, out_dir: str | Path) -> tuple[Path, Path]:
    """Stage 4: write :data:`~.contract.PTE_FILE` and :data:`~.contract.PTD_FILE` (only the
    trainable tensors, ``external_mutable_weights``) into ``out_dir``."""
    from executorch.exir import ExecutorchBackendConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    program = edge.to_executorch(config=ExecutorchBackendConfig(external_mutable_weights=True))
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
    xnnpack: bool = True,
    optimise: bool = True,
    xnnpack_ops: tuple[str, ...] = XNNPACK_OPS,
) -> dict[str, Any]:
    """capture -> joint graph -> (:func:`simplify`) -> lower -> serialise; returns what the
    manifest records. ``optimise=False`` skips the graph rewrites (the benchmark's "before");
    ``xnnpack_ops`` as in :func:`lower`."""
    _require_executorch()
    joint = joint_graph(capture(train_module, train_inputs))
    evaluation = capture(eval_module, eval_inputs)
    if optimise:
        simplify(joint)
        simplify(evaluation)
    edge = lower({contract.METHOD_TRAIN: joint, contract.METHOD_EVAL: evaluation}, xnnpack=xnnpack, xnnpack_ops=xnnpack_ops)
    pte, ptd = serialise(edge, out_dir)
    logger.info("wrote %s (%d B) and %s (%d B)", pte, pte.stat().st_size, ptd, ptd.stat().st_size)
    return {"files": [pte.name, ptd.name], "xnnpack": xnnpack}


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
