"""The ATen-to-edge conversion with its per-node passes fused: three retraces of a method instead
of eight.

Why: ``to_edge_transform_and_lower`` turns each method into the edge dialect with a list of graph
passes (``_generate_edge_program``). Seven of them are ``ExportPass`` subclasses that only
override ``call_operator`` -- transpose normalisation, view ops made functional, Python scalars
made tensors, symbolic values made tensors, mixed-dtype arithmetic cast, ATen ops replaced by
edge ops, memory formats replaced by dim orders -- and each one re-runs the whole method node by
node with fake tensors to rebuild it, whether or not it changes anything (on ``tiny``'s joint and
eval graphs three of them changed nothing: transposes, broken views, symbolic values). That
interpretation is about a millisecond a
node: on the full ``smolvlm-256m`` LoRA export (19,398 + 7,888 nodes) the edge conversion took
246 s of the export, most of it these retraces.

What this does: consecutive passes of that kind are run as one ``ExportPass`` whose
``call_operator`` is each pass's in turn (a class whose bases are the passes' classes in order,
so each pass's ``super().call_operator`` hands its result to the next pass, and the last one to
``ExportPass``, which builds the node): every node the first pass emits reaches the second as it
would have in a retrace of the first's output, so the graph is the same, built once. The passes
between them that act on the whole graph (no-op removal, empty-tensor pruning, ...) stay where
they are, which splits the seven into two fused passes. ``tests/export/test_fuse.py`` checks the
``.pte`` bytes against ExecuTorch's own lowering.

:func:`fused_edge_passes` makes ExecuTorch build its passes this way for one lowering, and only
while its pass list is the one described here: a later ExecuTorch whose list holds a pass of
another kind, or that builds it differently, is left alone.

:func:`idle_dim_order_pass_skipped` does the same for one pass of the edge-to-ExecuTorch list.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["fuse", "fuse_runs", "fused_edge_passes", "idle_dim_order_pass_skipped"]

logger = logging.getLogger(__name__)

_PROGRAM = "executorch.exir.program._program"

# ExportPass subclasses that override nothing but ``call_operator`` (and ``__init__``; ``call``
# only to report whether they modified the graph), by module and class name.
_FUSABLE = frozenset(
    {
        ("executorch.exir.passes.normalize_transpose_pass", "NormalizeTransposePass"),
        ("executorch.exir.passes.replace_broken_ops_with_function_ops_pass", "ReplaceBrokenOpsWithFunctionalOpsPass"),
        ("executorch.exir.passes.scalar_to_tensor_pass", "ScalarToTensorPass"),
        ("executorch.exir.passes.sym_to_tensor_pass", "SymToTensorPass"),
        ("executorch.exir.passes.remove_mixed_type_operators", "RemoveMixedTypeOperators"),
        ("executorch.exir.passes.replace_aten_with_edge_pass", "OpReplacePass"),
        ("executorch.exir.passes.memory_format_ops_pass", "MemoryFormatOpsPass"),
    }
)


# torch's view-to-copy pass, which ``_generate_edge_program`` runs before the list above.
_TORCH_VIEW_COPY = ("torch._export.passes.replace_view_ops_with_view_copy_ops_pass", "ReplaceViewOpsWithViewCopyOpsPass")


def _unwrapped(p: Any) -> Any:
    """The pass behind ExecuTorch's pass-manager wrapper (``functools.wraps`` keeps it)."""
    return getattr(p, "__wrapped__", p)


def _fusable(p: Any) -> bool:
    cls = type(_unwrapped(p))
    return (cls.__module__, cls.__qualname__) in _FUSABLE or getattr(cls, "_fusable", False)


def _view_copies() -> Any:
    """torch's ``ReplaceViewOpsWithViewCopyOpsPass`` rule (views become their ``*_copy`` ops,
    with torch's own tables) on ExecuTorch's ``ExportPass``, so it can join a fused run: torch's
    pass is built on torch's older export pass base, so it cannot, and alone it is one more
    retrace of each method (~15 s of the full ``smolvlm-256m`` LoRA export)."""
    from executorch.exir.pass_base import ExportPass
    from torch._export.passes.replace_view_ops_with_view_copy_ops_pass import (
        _NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS,
        get_view_copy_of_view_op,
    )
    from torch._ops import HigherOrderOperator

    class ViewCopies(ExportPass):
        _fusable = True

        def call_operator(self, op: Any, args: Any, kwargs: Any, meta: Any) -> Any:
            if op in _NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS:
                op = _NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS[op]
            elif not isinstance(op, HigherOrderOperator) and (copy := get_view_copy_of_view_op(op._schema)):
                op = copy
            return super().call_operator(op, args, kwargs, meta)

    return ViewCopies()


def fuse(passes: Sequence[Any]) -> Any:
    """One ``ExportPass`` that applies ``passes`` (instances of :data:`_FUSABLE` classes) in
    order, node by node, in a single retrace."""
    classes = tuple(type(p) for p in passes)
    if len(classes) == 1:
        return passes[0]
    name = "Fused[" + ",".join(c.__name__ for c in classes) + "]"
    return type(name, classes, {})()


def fuse_runs(passes: Sequence[Any]) -> list[Any]:
    """``passes`` with every run of consecutive fusable passes replaced by one :func:`fuse`."""
    out: list[Any] = []
    run: list[Any] = []
    for p in [*passes, None]:
        if p is not None and _fusable(p):
            run.append(_unwrapped(p))
            continue
        if run:
            out.append(fuse(run))
            run = []
        if p is not None:
            out.append(p)
    return out


class _Applied:
    """Stands in for a pass already applied inside a fused one: returns the graph unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, graph_module: Any) -> Any:
        from torch.fx.passes.infra.pass_base import PassResult

        return PassResult(graph_module, False)


@contextlib.contextmanager
def fused_edge_passes() -> Iterator[bool]:
    """Within the block, ExecuTorch's ATen-to-edge passes run fused (see the module docstring);
    yields whether they do. ``_generate_edge_program`` runs the list ``_get_aten_to_edge_passes``
    returns, then ``OpReplacePass`` and, unless the config skips dim orders,
    ``MemoryFormatOpsPass``: the list handed back holds those two at its end, fused with the
    passes before them, and the two names stand for no-ops until the block ends. torch's
    view-to-copy pass, which it runs before the list, joins the list's first fused run the same
    way (:func:`_view_copies`)."""
    program = importlib.import_module(_PROGRAM)
    upstream = program._get_aten_to_edge_passes
    op_replace, memory_format = program.OpReplacePass, program.MemoryFormatOpsPass
    view_copy = program.ReplaceViewOpsWithViewCopyOpsPass
    expected = {(c.__module__, c.__qualname__) for c in (op_replace, memory_format)}
    if not expected <= _FUSABLE or getattr(upstream, "__module__", None) != _PROGRAM:
        logger.debug("ExecuTorch's edge passes are not the expected ones; not fusing")
        yield False
        return
    # torch's view-to-copy pass runs just before the list; when only the sym-size renaming (which
    # touches no view op) comes before the list's first fusable pass, the rule moves to the head
    # of that fused run
    from executorch.exir import EdgeCompileConfig

    before_first = list(itertools.takewhile(lambda p: not _fusable(p), upstream(EdgeCompileConfig())[0]))
    view_copies_fused = (view_copy.__module__, view_copy.__qualname__) == _TORCH_VIEW_COPY and [
        type(_unwrapped(p)).__name__ for p in before_first
    ] == ["ReplaceSymSizeOpPass"]

    @functools.wraps(upstream)
    def get_passes(config: Any) -> Any:
        pre, post = upstream(config)
        tail = [op_replace()] + ([] if config._skip_dim_order else [memory_format()])
        passes = [*pre, *tail]
        if view_copies_fused:
            passes.insert(len(before_first), _view_copies())
        return fuse_runs(passes), post

    program._get_aten_to_edge_passes = get_passes
    program.OpReplacePass = program.MemoryFormatOpsPass = _Applied
    if view_copies_fused:
        program.ReplaceViewOpsWithViewCopyOpsPass = _Applied
    try:
        yield True
    finally:
        program._get_aten_to_edge_passes = upstream
        program.OpReplacePass, program.MemoryFormatOpsPass = op_replace, memory_format
        program.ReplaceViewOpsWithViewCopyOpsPass = view_copy


@contextlib.contextmanager
def idle_dim_order_pass_skipped() -> Iterator[bool]:
    """Within the block (``to_executorch``), ExecuTorch's ``LegalizePortableDimOrderPass`` is not
    run on a method it would leave as it is; yields whether the check is installed.

    Why: the pass inserts a contiguous dim-order copy before the five ops whose portable kernels
    need one (``expand_copy``, ``sum.dim_IntList``, ``mean.dim``, two poolings) when their first
    input is in another dim order; to find them it retraces the whole method with fake tensors,
    running every delegate again: 27 s of the full ``smolvlm-256m`` LoRA export (py-spy), for a
    graph whose inputs to those ops are all contiguous. Its decision reads only the input's
    ``dim_order()``, which each node's ``val`` already holds, so the check is made on the graph
    as it stands and the pass runs whenever one of those inputs is not in the default order (or
    is not a traced tensor, or the graph has subgraphs); otherwise the method goes on unchanged.
    ``tests/export/test_fuse.py`` checks the ``.pte`` bytes against ExecuTorch's own passes."""
    program = importlib.import_module(_PROGRAM)
    upstream = getattr(program, "LegalizePortableDimOrderPass", None)
    if upstream is None or not hasattr(upstream, "_target_ops"):
        logger.debug("ExecuTorch's dim-order legalisation is not the expected pass; running it as is")
        yield False
        return

    class OnlyWhereNeeded(upstream):
        def call(self, graph_module: Any) -> Any:
            if _legalisation_needed(graph_module, upstream._target_ops):
                return super().call(graph_module)
            from torch.fx.passes.infra.pass_base import PassResult

            return PassResult(graph_module, False)

    program.LegalizePortableDimOrderPass = OnlyWhereNeeded
    try:
        yield True
    finally:
        program.LegalizePortableDimOrderPass = upstream


def _legalisation_needed(graph_module: Any, targets: Any) -> bool:
    """Whether ``LegalizePortableDimOrderPass`` could insert a copy in ``graph_module``."""
    import torch
    from torch.fx import GraphModule, Node

    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and isinstance(getattr(graph_module, node.target, None), GraphModule):
            return True  # a control-flow subgraph: let the pass walk it
        if node.op != "call_function" or node.target not in targets:
            continue
        source = node.args[0] if node.args else None
        value = source.meta.get("val") if isinstance(source, Node) else None
        if not isinstance(value, torch.Tensor):
            return True
        if tuple(int(d) for d in value.dim_order()) != tuple(range(value.dim())):
            return True
    return False
