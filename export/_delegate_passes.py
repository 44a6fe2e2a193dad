"""XNNPACK's per-delegate passes, run only where they change something.

Why: ``XnnpackBackend.preprocess`` runs seventeen graph passes on every delegate before it
serialises it (batch-norm fusion, SDPA matching, channels-last tagging, ...), each one a full
``ExportedProgram`` rebuild with a verifier and most of them a fake-tensor retrace: ~0.15 s per
delegate on these cores, whatever the delegate holds. A training export has hundreds of small
delegates (the tiny test model: 252; ``smolvlm-256m``: thousands), nearly all the same few
shapes of ``linear``/``mm``/``permute``, and on those most passes change nothing: measured on the
tiny LoRA export, 3 of the 17 changed any delegate (linear conversion, channels-last tagging and
the dim-order revert), and those 36 s were a quarter of the whole export.

What this does: first, a pass that can act only on ops a delegate does not hold is not run
(:func:`may_act`: batch-norm fusion without a batch norm, the SDPA and bilinear-upsample matchers
without every op of one of their patterns, ...; on ``smolvlm-256m`` cut to 2+4 layers the
delegates fell into 105 forms, and those passes were most of their 1,785 pass runs). Then, a
delegate's *form* is its graph with everything a pass can act on -- node
kinds, targets, argument wiring, kwargs, tensor shapes/dtypes/strides, the other node metadata,
and each placeholder's kind (input, parameter, buffer, constant) -- but not the provenance
metadata (stack traces, module paths, debug handles, delegate names) or the constant values. The first delegate
of each form runs every pass and records which ones changed its form; later delegates of that
form run only those, in the same order. Passes decide from the form (what they rewrite, fold,
fuse or tag), so a pass that left the first delegate of a form unchanged leaves the others
unchanged, and skipping it gives the same graph. ``tests/export/test_fuse.py`` checks the
``.pte`` bytes against ExecuTorch's own lowering.

:func:`only_changing_passes` swaps the pass manager in for the name ``preprocess`` uses, for one
lowering, and only while that name is still ExecuTorch's class (a later ExecuTorch that changes it
is left alone).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.fx import Node

__all__ = ["delegate_form", "may_act", "only_changing_passes"]

logger = logging.getLogger(__name__)

# Node metadata that records where a node came from or which delegate it went to, not what it
# computes (``desc``: the traced function's input index; ``delegation_tag``: the delegate's name).
_PROVENANCE = frozenset(
    {
        "stack_trace",
        "nn_module_stack",
        "source_fn_stack",
        "from_node",
        "seq_nr",
        "torch_fn",
        "debug_handle",
        "desc",
        "delegation_tag",
    }
)


def _meta_form(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), tuple(value.stride()))
    if isinstance(value, (list, tuple)):
        return tuple(_meta_form(v) for v in value)
    return repr(value)


def delegate_form(ep: torch.export.ExportedProgram) -> tuple:
    """What XNNPACK's passes can see of the program ``ep``, as a hashable value (see the module
    docstring): equal for two delegates that differ only in names, provenance and constant
    values."""
    kinds = {spec.arg.name: spec.kind.name for spec in ep.graph_signature.input_specs if hasattr(spec.arg, "name")}
    index: dict[Node, int] = {}

    def wire(a: Any) -> Any:
        return torch.fx.node.map_arg(a, lambda n: ("node", index[n]))

    form = []
    for node in ep.graph.nodes:
        index[node] = len(index)
        meta = tuple(sorted((k, _meta_form(v)) for k, v in node.meta.items() if k not in _PROVENANCE))
        form.append(
            (
                node.op,
                str(node.target) if node.op != "placeholder" else kinds.get(node.name, "?"),
                repr(wire(node.args)),
                repr(wire(node.kwargs)),
                meta,
            )
        )
    outputs = tuple(spec.kind.name for spec in ep.graph_signature.output_specs)
    return (tuple(form), outputs)


# Passes that act only on a graph holding one of these ops (each pass's ``call`` in ExecuTorch 1.5
# rewrites nodes of these targets and nothing else); by class name, so a pass a later ExecuTorch
# adds, or renames, runs.
_BATCH_NORMS = frozenset({"aten.native_batch_norm.default", "aten._native_batch_norm_legit_no_training.default"})
_ACTS_ON_ANY: dict[str, frozenset[str]] = {
    "FuseBatchNormPass": _BATCH_NORMS,
    "DecomposeBatchNorm": _BATCH_NORMS,
    "FuseActivationPass": frozenset({"aten.relu.default", "aten.hardtanh.default"}),
    "DecomposeConcatenate": frozenset({"aten.cat.default"}),
    "RemoveGetItemPass": frozenset({"aten.max_pool2d_with_indices.default", "aten.max.dim"}),
    "InsertPadQDQPass": frozenset({"aten.constant_pad_nd.default"}),
    "Conv1dUnsqueezePass": frozenset({"aten.convolution.default"}),
    "PReLUReshapePass": frozenset({"aten._prelu_kernel.default"}),
}
# Passes that replace matches of subgraph patterns (``SubgraphMatcher``: a match holds every op
# of its pattern), by the module that holds the patterns.
_MATCHES_PATTERNS = {"ConvertToUpsampleBilinear2d": "bilinear_2d", "ConvertToSDPAPass": "sdpa"}


def _op_names(graph: torch.fx.Graph) -> frozenset[str]:
    return frozenset(getattr(n.target, "__name__", str(n.target)) for n in graph.nodes if n.op == "call_function")


@functools.cache
def _pattern_ops(module: str) -> tuple[frozenset[str], ...]:
    """The op names of each pattern graph the XNNPACK partitioner module ``module`` matches."""
    patterns = importlib.import_module(f"executorch.backends.xnnpack.partition.graphs.{module}").get_graphs()
    return tuple(_op_names(p.graph) for p in patterns)


def may_act(pass_: type, ep: torch.export.ExportedProgram) -> bool:
    """False when XNNPACK's pass ``pass_`` cannot change ``ep``: it acts only on ops ``ep`` does
    not hold (the tables above); True for every other pass."""
    name = pass_.__name__
    ops = _op_names(ep.graph)
    if name in _ACTS_ON_ANY:
        return not ops.isdisjoint(_ACTS_ON_ANY[name])
    if name in _MATCHES_PATTERNS:
        return any(pattern <= ops for pattern in _pattern_ops(_MATCHES_PATTERNS[name]))
    if name == "PropagateCustomMetaPass":  # acts on quantize / dequantize nodes
        from executorch.backends.xnnpack.utils.quant_utils import is_dequant, is_quant

        return any(is_quant(n) or is_dequant(n) for n in ep.graph.nodes)
    return True


class _FormMemo:
    """Which passes changed the first delegate of each form, for one lowering."""

    def __init__(self) -> None:
        self.changing: dict[tuple, tuple[type, ...]] = {}
        self.skipped = 0
        self.run = 0


def _pass_manager(upstream: type, memo: _FormMemo) -> type:
    class OnlyChangingPasses(upstream):  # type: ignore[misc, valid-type]
        """``XNNPACKPassManager`` that skips the passes which cannot act on a delegate
        (:func:`may_act`) or did not change the first delegate of its form (see the module
        docstring)."""

        def transform(self) -> torch.export.ExportedProgram:
            ep = self.exported_program
            form = delegate_form(ep)
            known = memo.changing.get(form)
            if known is not None:
                memo.skipped += len(self.passes) - len(known)
                memo.run += len(known)
                return upstream(ep, passes=list(known)).transform() if known else ep
            changing, current = [], form
            for pass_ in self.passes:
                if not may_act(pass_, ep):
                    memo.skipped += 1
                    continue
                ep = upstream(ep, passes=[pass_]).transform()
                memo.run += 1
                after = delegate_form(ep)
                if after != current:
                    changing.append(pass_)
                    current = after
            memo.changing[form] = tuple(changing)
            return ep

    return OnlyChangingPasses


@contextlib.contextmanager
def only_changing_passes() -> Iterator[bool]:
    """Within the block, XNNPACK's preprocess runs per delegate only the passes that changed the
    first delegate of its form. Yields whether the swap was made (False when ExecuTorch's
    preprocess no longer uses ``XNNPACKPassManager`` by that name)."""
    from executorch.backends.xnnpack import _passes, xnnpack_preprocess

    upstream = getattr(xnnpack_preprocess, "XNNPACKPassManager", None)
    if upstream is not _passes.XNNPACKPassManager:
        logger.debug("XNNPACK's preprocess does not use XNNPACKPassManager; leaving it as is")
        yield False
        return
    memo = _FormMemo()
    xnnpack_preprocess.XNNPACKPassManager = _pass_manager(upstream, memo)
    try:
        yield True
    finally:
        xnnpack_preprocess.XNNPACKPassManager = upstream
        logger.debug(
            "XNNPACK delegate passes: %d forms, %d passes run, %d skipped",
            len(memo.changing), memo.run, memo.skipped,
        )
