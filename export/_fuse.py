"""Delegate fusion whose cost does not grow as graph size x number of delegates.

Why: ExecuTorch fuses each XNNPACK partition into the graph with ``create_submodule_from_nodes``,
which then calls ``torch.fx.passes.tools_common.legalize_graph`` on the *whole* graph: a fresh
``Graph`` with every node copied in Kahn order, assigned to the module, which regenerates and
``exec``s the Python source of the whole graph. Once per delegate, that is O(nodes x delegates):
on ``smolvlm-256m`` cut to 1+2 layers with Hydra adapters (139 delegates), 34 of the 132 s of
lowering; at the full 42 layers it grows ~200x while the rest grows ~14x, so it dominates (the
full Hydra export was still lowering after 65 min). ExecuTorch also formats the whole graph
module into a ``logging.debug`` f-string per delegate, which regenerates the source again.

What this does, producing the same graph (tests compare the ``.pte`` bytes):

* :func:`legalize_in_place` computes exactly ``legalize_graph``'s order (same Kahn queue over the
  same ``users`` order, same prioritised ops), then relinks the existing nodes into it and
  re-orders every ``users`` dict as copying would have -- no node copies, no new ``Graph``.
* :class:`DeferredCodeGraphModule` is torch's ``_LazyGraphModule`` (source generated on first
  use, not on every ``recompile``) whose ``str()`` does not force that generation. The
  partitioner hands ExecuTorch the tagged program on one of these
  (:func:`defer_codegen`); ExecuTorch rebuilds an ordinary ``GraphModule`` when it wraps the
  lowered program, so nothing outside lowering sees it.
* :func:`fast_fusion` swaps :func:`legalize_in_place` in for the ``legalize_graph`` name that
  ExecuTorch's fusion uses, for the duration of one lowering, and only when that name is still
  torch's function (a later ExecuTorch that changes it is left alone). With ``stable`` (what
  exports use) it re-sorts only the span each fusion disordered (:class:`_WindowedLegalizer`).
* The other per-delegate walks of the whole graph in ExecuTorch's fusion go the same way: each
  tag's nodes (:class:`_TagIndex`), the fused call's insertion point
  (:func:`_inserting_after_the_last_output`), the delegate call's debug handle
  (:class:`_DebugHandles`) and the signature's name maps (:func:`_signature_maps_between_renames`).

Measured (``smolvlm-256m`` int8, Hydra r8, batch 1, 2 cores): cut to 4+8 layers, lowering 169 s
instead of 429 s and 1.07 GB peak instead of 1.79 GB, the same ``.pte``/``.ptd`` bytes; the full
model exports in 24 min at 3.3 GB peak RSS (the old path was still lowering after 65 min at
9.3 GB). The rest of lowering is linear: ``to_edge`` over the graph and XNNPACK's own passes per
delegate (~0.2 s each).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import inspect
import logging
import operator
from collections.abc import Iterator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from . import _lookups

__all__ = [
    "DeferredCodeGraphModule",
    "defer_codegen",
    "fast_fusion",
    "legalize_in_place",
    "topological_order",
]

logger = logging.getLogger(__name__)

_INPUT_MAPS = ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants")

# legalize_graph puts these at the front of its queue (runtime assertions before data-dependent
# ops); the same rule keeps the order identical.
_PRIORITISED = frozenset(
    {
        operator.add,
        operator.mul,
        operator.sub,
        operator.floordiv,
        operator.truediv,
        operator.mod,
        operator.le,
        operator.lt,
        operator.ge,
        operator.gt,
        operator.eq,
        operator.ne,
        torch.ops.aten.sym_constrain_range.default,
        torch.ops.aten.sym_constrain_range_for_size.default,
        torch.ops.aten._assert_async.msg,
        torch.ops.aten.scalar_tensor.default,
        torch.ops.aten._assert_scalar.default,
    }
)


def topological_order(graph: torch.fx.Graph, stable: bool = False) -> list[Node]:
    """The order ``legalize_graph`` gives ``graph``'s nodes (Kahn; FIFO queue, prioritised ops
    first), or with ``stable`` the valid order closest to the graph's own (Kahn taking the ready
    node that comes first in the graph). Raises ``RuntimeError`` naming the nodes on a cycle.

    Why ``stable``: the FIFO queue is breadth-first, so every value that depends on the inputs
    alone (each frozen weight's dequantisation, in a joint graph) moves to the front and stays
    alive until its far-away use; ExecuTorch plans memory in this order. Keeping the traced
    order keeps each value next to its readers (``mobile-peft bench levers``: planned arena)."""
    nodes = list(graph.nodes)
    indeg = dict.fromkeys(nodes, 0)
    for node in nodes:
        for user in node.users:
            indeg[user] += 1
    order: list[Node] = []
    if stable:
        position = {node: i for i, node in enumerate(nodes)}
        ready = [position[node] for node in nodes if indeg[node] == 0]
        heapq.heapify(ready)
        while ready:
            current = nodes[heapq.heappop(ready)]
            order.append(current)
            for user in current.users:
                indeg[user] -= 1
                if indeg[user] == 0:
                    heapq.heappush(ready, position[user])
    else:
        queue = collections.deque(node for node in nodes if indeg[node] == 0)
        while queue:
            current = queue.popleft()
            order.append(current)
            for user in current.users:
                indeg[user] -= 1
                if indeg[user] == 0:
                    if user.op == "call_function" and user.target in _PRIORITISED:
                        queue.appendleft(user)
                    else:
                        queue.append(user)
    if len(order) < len(nodes):
        raise RuntimeError(f"Input graph has cycles, unable to add {[n for n in indeg if indeg[n] != 0]}")
    return order


def legalize_in_place(gm: GraphModule, stable: bool = False) -> GraphModule:
    """``legalize_graph`` without copying: same resulting node order and ``users`` order (with
    ``stable``: the order of :func:`topological_order` ``stable``)."""
    order = topological_order(gm.graph, stable)
    position = {node: i for i, node in enumerate(order)}
    cursor = gm.graph._root  # the sentinel before the first node
    for node in order:
        if cursor._next is not node:
            cursor.append(node)
        cursor = node
    # A copied graph registers each node's users in the order the users were copied.
    for node in order:
        if len(node.users) > 1:
            ordered = sorted(node.users.items(), key=lambda item: position[item[0]])
            node.users.clear()
            node.users.update(ordered)
    gm.recompile()
    return gm


try:  # torch's lazily compiled GraphModule (private; used by inductor)
    from torch.fx._lazy_graph_module import _LazyGraphModule
except ImportError:  # pragma: no cover - older/newer torch without it
    _LazyGraphModule = None


if _LazyGraphModule is not None:

    class DeferredCodeGraphModule(_LazyGraphModule):
        """A ``GraphModule`` that generates its Python source when it is run or its ``code`` is
        read, not at every ``recompile`` -- and not for ``str()``, which ExecuTorch evaluates for
        a debug log line per delegate."""

        def __str__(self) -> str:
            return f"{type(self).__name__}({len(self.graph.nodes)} nodes; source generated on use)"

else:  # pragma: no cover
    DeferredCodeGraphModule = None


def defer_codegen(program: Any) -> None:
    """Put ``program`` (an ``ExportedProgram``) on a :class:`DeferredCodeGraphModule` over the
    same graph; a no-op when torch has no lazy graph module."""
    if DeferredCodeGraphModule is None or isinstance(program.graph_module, DeferredCodeGraphModule):
        return
    gm = program.graph_module
    deferred = DeferredCodeGraphModule(gm, gm.graph)
    deferred.meta = dict(gm.meta)
    program._graph_module = deferred


class _WindowedLegalizer:
    """Stable legalisation after a fusion that re-sorts only the span the fusion disordered.

    Why it is exact: ExecuTorch fuses a partition into a graph that is in a valid order (it was
    legalised after the previous fusion), inserting the call and its ``getitem`` s after the last
    member that has outside readers and erasing the members. Only nodes between the first and the
    last (non-placeholder) member can then be out of order: everything before that window still
    comes after its inputs, and everything after it reads only nodes before it. The stable order
    (:func:`topological_order` ``stable``: of the ready nodes, the earliest in the graph) of such
    a graph is the part before the window, then the stable order of the window alone, then the
    rest -- so re-sorting the window gives what re-sorting the whole graph would. Users dicts are
    re-sorted for the window's nodes, their inputs and the inputs of their readers, the only ones
    the fusion or the re-sort changed. The first legalisation of each graph is the whole-graph
    one (it also orders users dicts that no window touches), and any window whose boundaries do
    not hold falls back to it."""

    def __init__(self, fuse: Any) -> None:
        self.fuse = fuse
        self.window: tuple[torch.fx.Graph, Node, Node] | None = None
        self.seen: set[int] = set()
        self.local = 0  # legalisations done by window (logged when the lowering ends)

    def fuse_as_graphmodule(self, gm: GraphModule, nodes: list[Node], *args: Any, **kwargs: Any) -> Any:
        body = [node for node in nodes if node.op != "placeholder"]
        if body:
            first = min(body, key=lambda node: node._sort_key)
            last = max(body, key=lambda node: node._sort_key)
            self.window = (gm.graph, first._prev, last._next)
        else:
            self.window = None
        return self.fuse(gm, nodes, *args, **kwargs)

    def __call__(self, gm: GraphModule) -> GraphModule:
        window, self.window = self.window, None
        if id(gm.graph) in self.seen and window is not None and window[0] is gm.graph:
            if _legalize_window(window[1], window[2]):
                self.local += 1
                gm.recompile()
                return gm
        self.seen.add(id(gm.graph))
        return legalize_in_place(gm, stable=True)


def _before(node: Node, anchor: Node) -> bool:
    """``node`` is ``anchor`` or comes before it (the root sentinel stands before everything)."""
    return anchor.op != "root" and node._sort_key <= anchor._sort_key


def _after(node: Node, anchor: Node) -> bool:
    """``node`` is ``anchor`` or comes after it (the root sentinel stands after everything)."""
    return anchor.op != "root" and node._sort_key >= anchor._sort_key


def _legalize_window(start: Node, end: Node) -> bool:
    """Stable-sort the nodes strictly between ``start`` and ``end`` in place; False (graph
    untouched) when the span is not closed: a node in it reads a node after it, or is read by a
    node before it, or the span has a cycle."""
    if start._erased or end._erased:
        return False
    window: list[Node] = []
    node = start._next
    while node is not end:
        if node.op == "root":
            return False
        window.append(node)
        node = node._next
    position = {node: i for i, node in enumerate(window)}
    indeg = dict.fromkeys(window, 0)
    for node in window:
        for source in node.all_input_nodes:
            if source not in position and not _before(source, start):
                return False
        for user in node.users:
            if user in position:
                indeg[user] += 1
            elif not _after(user, end):
                return False
    ready = [position[node] for node in window if indeg[node] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        current = window[heapq.heappop(ready)]
        order.append(current)
        for user in current.users:
            if user in indeg:
                indeg[user] -= 1
                if indeg[user] == 0:
                    heapq.heappush(ready, position[user])
    if len(order) < len(window):
        return False
    cursor = start
    for node in order:
        if cursor._next is not node:
            cursor.append(node)
        cursor = node
    # Readers of the fusion's outputs had an argument replaced, which re-registers them as the
    # last user of each of their inputs; the window's own inputs gained the call as a user.
    touched = set(window)
    for node in window:
        touched.update(node.all_input_nodes)
        for user in node.users:
            touched.update(user.all_input_nodes)
    for node in touched:
        if len(node.users) > 1:
            ordered = sorted(node.users.items(), key=lambda item: item[0]._sort_key)
            node.users.clear()
            node.users.update(ordered)
    return True


def _inserting_after_the_last_output(insert: Any) -> Any:
    """torch's ``insert_subgm`` with its insertion point -- the partition's output that comes last
    in the graph -- found among the outputs by position, not by walking the graph backwards from
    its end for every delegate (9 s of the full ``smolvlm-256m`` LoRA export)."""

    @functools.wraps(insert)
    def insert_subgm(gm: GraphModule, sub_gm: GraphModule, inputs: Any, outputs: Any, *args: Any) -> Any:
        if not args and outputs:
            args = (max(outputs, key=lambda node: node._sort_key),)
        return insert(gm, sub_gm, inputs, outputs, *args)

    return insert_subgm


class _TagIndex:
    """ExecuTorch's two per-tag scans of the whole graph, answered from one index.

    Why: before fusing, ExecuTorch calls ``_maybe_duplicate_constant_nodes`` for every delegate
    tag (it only looks at placeholders carrying the tag, to copy constants that two delegates
    share) and then ``_get_node_list_with_same_tag`` (the nodes carrying the tag, in graph order);
    each walks every node of the graph, so together they cost tags x nodes (19 s of the full
    ``smolvlm-256m`` LoRA export).

    * A tag that no placeholder carries has nothing to duplicate: the call is skipped (the
      placeholders are found through the graph's own op index, not by a walk).
    * The nodes of each tag are collected in one walk, at the first question about a graph
      (after every duplication, which is the only step that tags nodes), and handed back in the
      graph's current order. Fusing one tag's nodes erases only them and adds nodes carrying
      that tag (the fused call's ``getitem`` s); a list that holds a placeholder (upstream checks
      those) or an erased node, or whose nodes changed tag, is computed by ExecuTorch's scan."""

    def __init__(self, node_list: Any, duplicate: Any) -> None:
        self.node_list, self.duplicate = node_list, duplicate
        self.graphs: dict[int, tuple[torch.fx.Graph, dict[str, list[Node]]]] = {}

    def maybe_duplicate_constant_nodes(self, program: Any, tag: str) -> Any:
        for node in program.graph.find_nodes(op="placeholder"):
            if node.meta.get("delegation_tag", "") == tag:
                return self.duplicate(program, tag)
        return None

    def get_node_list_with_same_tag(self, gm: GraphModule, tag: str, program: Any) -> list[Node]:
        entry = self.graphs.get(id(gm.graph))
        if entry is None or entry[0] is not gm.graph:
            by_tag: dict[str, list[Node]] = collections.defaultdict(list)
            for node in gm.graph.nodes:
                found = node.meta.get("delegation_tag", "")
                if found:
                    by_tag[found].append(node)
            entry = self.graphs[id(gm.graph)] = (gm.graph, by_tag)
        nodes = entry[1].get(tag, [])
        if any(n._erased or n.op == "placeholder" or n.meta.get("delegation_tag", "") != tag for n in nodes):
            return self.node_list(gm, tag, program)
        return sorted(nodes, key=lambda node: node._sort_key)


class _DebugHandles:
    """The debug handle of each delegate call, without a walk of the whole graph per delegate.

    Why: ExecuTorch's ``_insert_lowered_submodule`` swaps each fused call for an
    ``executorch_call_delegate`` whose debug handle is one more than the largest handle in the
    graph, found by walking every node (``generate_debug_handle``): delegates x nodes, 21 s of
    the full ``smolvlm-256m`` LoRA export and 40 s of the Hydra one (py-spy).

    What this does: :meth:`insert_lowered_submodule` is ExecuTorch's function step for step
    (the same nodes, names, metadata and signature changes, in the same order: ``tests/export/
    test_fuse.py`` compares the ``.pte`` bytes), except that the largest handle of a graph is
    found by one walk and then carried forward: the new call takes the largest + 1, and the
    call it replaces (the only node it removes from the graph) held no more than the largest, so
    afterwards the largest is the new call's. Between two insertions ExecuTorch only builds the
    lowered module and drops consumed constants' placeholders, none of them above the new call.
    The name is swapped in only under the ExecuTorch release it follows (:data:`_KNOWN_EXECUTORCH`)
    and while its function still defines ``generate_debug_handle``."""

    def __init__(self) -> None:
        self.largest: dict[int, tuple[torch.fx.Graph, int]] = {}

    def next_handle(self, graph: torch.fx.Graph) -> int:
        """One more than the largest handle in ``graph`` (ExecuTorch's ``generate_debug_handle``)."""
        entry = self.largest.get(id(graph))
        if entry is None or entry[0] is not graph:
            largest = 0
            for node in graph.nodes:
                largest = max(largest, node.meta.get("debug_handle", 0))
            entry = self.largest[id(graph)] = (graph, largest)
        return entry[1] + 1

    def insert_lowered_submodule(
        self,
        submodule_program: Any,
        owning_program: Any,
        call_submodule_node: Node,
        submodule_output_node: Node,
        lowered_module: Any,
        is_submodule: bool,
        toplevel_input_specs_to_delete: dict[str, Any],
        toplevel_output_specs_to_delete: dict[str, Any],
    ) -> None:
        from executorch.exir.delegate import executorch_call_delegate, get_lowered_module_name
        from executorch.exir.lowered_backend_module import _unsafe_adjust_original_program

        owning_graph_module = call_submodule_node.graph.owning_module
        graph = owning_program.graph_module.graph
        call_delegate_args = [
            arg
            for arg in call_submodule_node.args
            if not (isinstance(arg, Node) and arg.name in toplevel_input_specs_to_delete)
        ]
        with owning_graph_module.graph.inserting_before(call_submodule_node):
            lowered_name = get_lowered_module_name(owning_graph_module, lowered_module)
            lowered_node = owning_graph_module.graph.get_attr(lowered_name)
            call_delegate_node = owning_graph_module.graph.call_function(
                executorch_call_delegate, (lowered_node, *call_delegate_args), call_submodule_node.kwargs
            )
            handle = call_delegate_node.meta["debug_handle"] = self.next_handle(graph)
            call_delegate_node.meta["val"] = [out.meta["val"] for out in submodule_output_node.args[0]]
            call_submodule_node.replace_all_uses_with(call_delegate_node)
            owning_graph_module.graph.erase_node(call_submodule_node)
        if owning_graph_module.graph is graph:
            # the new call holds the largest handle now; the erased call held one no larger
            self.largest[id(graph)] = (graph, handle)
        if is_submodule:
            if toplevel_input_specs_to_delete or toplevel_output_specs_to_delete:
                raise AssertionError("a delegate inside a control-flow submodule cannot consume top-level specs")
        elif toplevel_input_specs_to_delete or toplevel_output_specs_to_delete:
            _unsafe_adjust_original_program(
                owning_program, call_delegate_node, toplevel_input_specs_to_delete, toplevel_output_specs_to_delete
            )


# The ExecuTorch release whose ``_insert_lowered_submodule`` :class:`_DebugHandles` follows.
_KNOWN_EXECUTORCH = "1.5.1"


def _is_the_known_insertion(function: Any) -> bool:
    from importlib.metadata import version

    nested = {c.co_name for c in function.__code__.co_consts if hasattr(c, "co_name")}
    return version("executorch") == _KNOWN_EXECUTORCH and "generate_debug_handle" in nested


@contextlib.contextmanager
def _signature_maps_between_renames() -> Iterator[None]:
    """Within the block (ExecuTorch's ``_create_partitions``), a graph signature's name maps are
    built once and again only after the signature renames one of its inputs (the only change it
    sees while partitions are cut out: ``replace_all_uses``, through the graph's replace hook,
    which mostly renames outputs) or its input list changes length. ``create_exported_program_from_submodule`` rebuilt them from every
    input spec for every delegate (~9 s of the full ``smolvlm-256m`` LoRA export, 22 s of the
    Hydra one, whose adapters add many inputs)."""
    from torch.export.graph_signature import ExportGraphSignature

    upstream_rename = ExportGraphSignature.replace_all_uses
    renames: dict[int, int] = collections.Counter()
    input_names: dict[int, tuple[Any, set[str]]] = {}

    @functools.wraps(upstream_rename)
    def replace_all_uses(self: Any, old: str, new: str) -> None:
        # a rename changes these maps only when it renames an input (most rename an output)
        known = input_names.get(id(self))
        if known is None or known[0] is not self or len(known[1]) != len(self.input_specs):
            known = input_names[id(self)] = (self, {getattr(i.arg, "name", None) for i in self.input_specs})
        if old in known[1]:
            renames[id(self)] += 1
            input_names.pop(id(self))
        return upstream_rename(self, old, new)

    def version(signature: Any) -> tuple[int, int, int]:
        return renames[id(signature)], id(signature.input_specs), len(signature.input_specs)

    ExportGraphSignature.replace_all_uses = replace_all_uses
    try:
        with _lookups.signature_maps_once(_INPUT_MAPS, version):
            yield
    finally:
        ExportGraphSignature.replace_all_uses = upstream_rename


@contextlib.contextmanager
def fast_fusion(stable: bool = False) -> Iterator[bool]:
    """Within the block, ExecuTorch's delegate fusion legalises in place (keeping the graph's
    order where it can with ``stable``, and then re-sorting only the span each fusion disordered:
    :class:`_WindowedLegalizer`), places each fused call without walking the graph
    (:func:`_inserting_after_the_last_output`), finds each tag's nodes from one index (:class:`_TagIndex`),
    reads the graph signature's name maps once between renames while cutting partitions
    (:func:`_signature_maps_between_renames`) and numbers the delegate calls without a walk per
    delegate (:class:`_DebugHandles`). Yields whether the swap was made (False when ExecuTorch no
    longer uses torch's ``legalize_graph`` and ``fuse_as_graphmodule`` there)."""
    from executorch.exir import lowered_backend_module as fusion
    from executorch.exir.backend import backend_api
    from torch.fx.passes import tools_common
    from torch.fx.passes.utils import fuser_utils

    original = getattr(fusion, "legalize_graph", None)
    fuse = getattr(fusion, "fuse_as_graphmodule", None)
    if original is not tools_common.legalize_graph or fuse is not fuser_utils.fuse_as_graphmodule:
        logger.debug("ExecuTorch's fusion does not call torch's legalize_graph; leaving it as is")
        yield False
        return
    place = fusion.insert_subgm
    if "insertion_point" in inspect.signature(place).parameters:
        fusion.insert_subgm = _inserting_after_the_last_output(place)
    if stable:
        windowed = _WindowedLegalizer(fuse)
        fusion.legalize_graph = windowed
        fusion.fuse_as_graphmodule = windowed.fuse_as_graphmodule
    else:
        fusion.legalize_graph = legalize_in_place
    scans = (backend_api._get_node_list_with_same_tag, backend_api._maybe_duplicate_constant_nodes)
    index = _TagIndex(*scans)
    backend_api._get_node_list_with_same_tag = index.get_node_list_with_same_tag
    backend_api._maybe_duplicate_constant_nodes = index.maybe_duplicate_constant_nodes
    insert, create_partitions = backend_api._insert_lowered_submodule, backend_api._create_partitions
    if _is_the_known_insertion(insert):
        backend_api._insert_lowered_submodule = _DebugHandles().insert_lowered_submodule

    @functools.wraps(create_partitions)
    def cut_partitions(*args: Any, **kwargs: Any) -> Any:
        with _signature_maps_between_renames():
            return create_partitions(*args, **kwargs)

    backend_api._create_partitions = cut_partitions
    try:
        yield True
    finally:
        fusion.legalize_graph = original
        fusion.fuse_as_graphmodule = fuse
        fusion.insert_subgm = place
        backend_api._get_node_list_with_same_tag, backend_api._maybe_duplicate_constant_nodes = scans
        backend_api._insert_lowered_submodule, backend_api._create_partitions = insert, create_partitions
        if stable:
            logger.debug("fusion: %d of the legalisations re-sorted one window", windowed.local)
