"""Lowering without the functionalisation retrace of a program that is already functional.

Why: ``to_edge_transform_and_lower`` starts every method with ``program.run_decompositions({})``
("functionalise before asking partitioners to preserve ops"): a fake-tensor retrace of the whole
program through AOT autograd. The training graph from ``_export_forward_backward`` has already
been through that trace -- it is functional core ATen, every op an ``OpOverload`` whose schema
mutates nothing and none of them CompositeImplicitAutograd (which the retrace would decompose) --
so the retrace rebuilds the same graph. Measured on ``smolvlm-256m`` int8 LoRA cut to 2+4
(vision+language) layers: 5.2 s of an 81 s export, on the 2,821-node joint graph; it grows with
the graph like every retrace.

What this does: within :func:`skip_functional_retrace`, ``ExportedProgram.run_decompositions``
called with an empty table returns the program itself when :func:`is_functional_core` holds for it,
and runs as before otherwise (a decomposition table, an op that mutates or decomposes, a
higher-order op). ``tests/export/test_retrace.py`` checks that the lowered program is the same
apart from the delegates' debug handles and that three SGD steps on it are bit-equal.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["is_functional_core", "skip_functional_retrace"]

logger = logging.getLogger(__name__)


@functools.cache
def _op_is_functional_core(op: torch._ops.OpOverload) -> bool:
    if op._schema.is_mutable:
        return False
    return not torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd")


def is_functional_core(ep: torch.export.ExportedProgram) -> bool:
    """Whether ``run_decompositions({})`` has nothing to do on ``ep``: every call is a
    non-mutating, non-composite ``OpOverload`` (or a tuple ``getitem``) and the graph has no
    nested graph modules."""
    for node in ep.graph.nodes:
        if node.op == "get_attr" and isinstance(getattr(ep.graph_module, str(node.target), None), torch.fx.GraphModule):
            return False
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if not isinstance(node.target, torch._ops.OpOverload) or not _op_is_functional_core(node.target):
            return False
    return True


@contextlib.contextmanager
def skip_functional_retrace() -> Iterator[None]:
    """Within the block, ``run_decompositions({})`` of a program :func:`is_functional_core`
    accepts returns that program unchanged (see the module docstring)."""
    upstream = torch.export.ExportedProgram.run_decompositions
    skipped = 0

    @functools.wraps(upstream)
    def run_decompositions(self: torch.export.ExportedProgram, decomp_table: Any = None, *args: Any, **kwargs: Any) -> Any:
        nonlocal skipped
        if decomp_table == {} and not args and not kwargs and is_functional_core(self):
            skipped += 1
            return self
        return upstream(self, decomp_table, *args, **kwargs)

    torch.export.ExportedProgram.run_decompositions = run_decompositions
    try:
        yield
    finally:
        torch.export.ExportedProgram.run_decompositions = upstream
        logger.debug("functionalisation retraces skipped: %d", skipped)
