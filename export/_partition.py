"""An XNNPACK partitioner whose cost grows linearly with the graph, for large joint graphs.

Why: ExecuTorch's ``XnnpackPartitioner`` merges matched ops with ``GroupBasedPartitioner``, which
keeps the full transitive set of downstream nodes of every node -- O(N^2) memory. Measured on the
joint forward+backward graph of ``smolvlm-256m`` cut to 1+2, 2+4 and 4+8 (vision+language)
layers: 0.16, 0.53 and 1.4 GB of transient inside ``partition``, growing with the square of the
depth; at the full 42 layers it is the ~17 GB that killed the export at 20.7 GB. Its
``per_op_mode`` avoids the closure but makes 3x more delegates (164 single ops -> 54 partitions on
the 1+2-layer graph), and every delegate costs a graph legalisation, so lowering took 2.2x longer.

What this one does: the same matched ops (the configs' ``check_constraints``/``get_partition``),
grouped in one topological sweep. An op may join the partition of one of its producers, of an op
that reads the same input, or one of the last partitions opened (q/k/v, the gradient matmuls of
one layer), when that keeps
the partition *convex*: no path leaves the partition and re-enters it. Convexity is tracked with
one bitset per node: ``taint[v]`` holds the partitions from which a path through a node outside
them reaches ``v``; ``v`` may join ``P`` only if ``P`` is not in the taint of ``v``'s inputs
computed as if ``v`` were in ``P``. Convex partitions can still depend on each other both ways
(``a -> b``, ``c -> d`` with ``{a, d}`` and ``{b, c}``), which fusing turns into a cycle; so
partitions are numbered as they open and ``v`` joins ``P`` only if no partition numbered ``P`` or
later reaches it: every edge between delegates then runs from a lower number to a higher one.
Bitsets are Python ints: N x P bits (a few MB at full size).
Candidates are local (a producer's, a sibling's or one of the last few partitions opened, and
within ``_MAX_GAP`` nodes of the partition's latest member), so a delegate does not pull distant
work together and extend tensor lifetimes: a recomputed activation's matmul in the backward would
otherwise join the forward delegate of the value it reads, and run in the forward (measured on
``tiny`` LoRA batch 8 with :func:`._recompute.recompute_activations`: arena 16.9 MiB without the gap,
10.5 with it; 14.0 without the recomputation, unchanged by the gap). Measured: 70 delegates
where upstream made 54 (1+2 layers); at 4+8 layers lowering peaks at 1.26 GB instead of 2.57 GB
in about the same time (203 s vs 188 s); the full ``smolvlm-256m`` exported at 6.6 GB peak RSS
(before :mod:`._fuse` took the per-delegate re-legalisation out: 3.3 GB with Hydra adapters now).

A partition also never holds back a large value computed outside it between its members
(``_MAX_HELD``): fused, the delegate runs once, after its last member, so every such input is
alive together at the call. The backward of a language model head dequantised in row blocks
(:class:`~mobile_peft.quant.QuantLinear`) reads one 15.5 MiB block per gradient matmul, each
recomputed right before its reader; grouped into one delegate, all seven blocks were alive at
once (``smolvlm-256m`` cut to 2+4 layers, language+projector: arena 156 MiB; each block in its
own delegate: see ``export/SUPPORT.md``).

Groups with more than one op (configs that pull dependencies in) fall back to the upstream
partitioner; the linear/addmm/mm configs used for training match single ops.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import torch
from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
from executorch.backends.xnnpack.partition.config.generic_node_configs import GeluConfig
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir.graph_module import contains_any_call_fn_target_op
from torch.fx import Node
from torch.fx.passes.infra.partitioner import Partition

from mobile_peft.core.errors import ConfigError

from . import _fuse, _lookups
from ._recompute import _bytes
from ._rewrites import gelu_approximation

__all__ = ["ExactGeluConfig", "LinearTimeXnnpackPartitioner", "convex_groups", "partitioner_configs"]


class ExactGeluConfig(GeluConfig):
    """ExecuTorch's ``GeluConfig`` for the exact (erf) GELU only. XNNPACK's GELU is the erf one
    and ExecuTorch's visitor drops ``approximate``, so upstream delegates SigLIP's
    ``gelu(x, approximate="tanh")`` and silently computes another function; a tanh GELU stays in
    ExecuTorch's kernel (``tests/export/test_partition.py``)."""

    def check_constraints(self, node: Node, ep: Any) -> bool:
        return gelu_approximation(node) == "none" and super().check_constraints(node, ep)


def partitioner_configs(names: tuple[str, ...]) -> list[type]:
    """ExecuTorch's XNNPACK partitioner configs with these class names, ``GeluConfig`` as
    :class:`ExactGeluConfig`; an unknown name is a :class:`~mobile_peft.core.errors.ConfigError`."""
    known = {c.__name__: c for c in ALL_PARTITIONER_CONFIGS}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"unknown XNNPACK partitioner config(s) {unknown}; expected names among {sorted(known)}.")
    return [ExactGeluConfig if c.__name__ == "GeluConfig" else c for c in ALL_PARTITIONER_CONFIGS if c.__name__ in names]


class LinearTimeXnnpackPartitioner(XnnpackPartitioner):
    """``XnnpackPartitioner`` with :func:`convex_groups` in place of the O(N^2) merge.

    ``fast``: hand the tagged program back on a :class:`~._fuse.DeferredCodeGraphModule`, so
    fusing each delegate does not regenerate the whole graph's Python source (see :mod:`._fuse`),
    partition with the whole-graph lookups computed once (:func:`._lookups.frozen_lookups`), and
    skip the per-node decomposition check where it has nothing to check
    (:meth:`ops_to_not_decompose`). False: ExecuTorch's own behaviour, for comparison.
    """

    def __init__(self, *args: Any, fast: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = fast

    def ops_to_not_decompose(self, ep: Any) -> tuple[list[Any], Any]:
        """Upstream's ops and per-node check, without the check when none of the ops occurs.

        With a per-node check ExecuTorch takes its ``EDGE_DO_NOT_DECOMP`` path: two more
        retraces of the whole program (decompose all but these ops, tag the nodes the check
        keeps, decompose again). A joint training graph from ``_export_forward_backward`` is
        already core ATen (its linears are ``mm``/``addmm``), so there is no node to check and
        the plain path gives the same program with fewer retraces: lowering the tiny LoRA joint
        graph called ``run_decompositions`` 9 times with ExecuTorch's path and once with this
        one (counted by wrapping ``ExportedProgram.run_decompositions``); the ``.pte`` bytes are
        checked equal in ``tests/export/test_fuse.py``."""
        ops, check = super().ops_to_not_decompose(ep)
        if self.fast and check is not None and not contains_any_call_fn_target_op(ep.graph_module, ops):
            return ops, None
        return ops, check

    def partition(self, exported_program: Any) -> Any:
        with _lookups.frozen_lookups() if self.fast else contextlib.nullcontext():
            result = super().partition(exported_program)
        if self.fast:
            _fuse.defer_codegen(result.tagged_exported_program)
        return result

    def generate_partitions(self, ep: Any) -> list[Partition]:
        matched = self.get_matched_nodes_from_configs(ep)
        ops = [[n for n in group if n.op == "call_function"] for group in matched]
        if any(len(group_ops) != 1 for group_ops in ops):
            return super().generate_partitions(ep)
        deps = {
            group_ops[0]: [n for n in group if n.op != "call_function"]
            for group, group_ops in zip(matched, ops)
        }
        groups = convex_groups(ep.graph_module.graph, set(deps))
        return [
            Partition(id=i, nodes=[n for op in members for n in (op, *deps[op])])
            for i, members in enumerate(groups)
        ]


def convex_groups(graph: torch.fx.Graph, supported: set[Node]) -> list[list[Node]]:
    """Group the ``supported`` nodes of ``graph`` into convex partitions (see the module
    docstring); returns the groups in topological order, each in topological order."""
    part: dict[Node, int] = {}  # supported node -> partition id
    taint: dict[Node, int] = {}  # node -> bitset of partitions a path has left before reaching it
    members: dict[int, list[Node]] = {}
    ids = itertools.count()
    recent: list[int] = []  # the last partitions opened, newest first
    order = {node: i for i, node in enumerate(graph.nodes)}
    last: dict[int, int] = {}  # partition id -> position of its latest member
    first: dict[int, int] = {}  # partition id -> position of its first member
    held: dict[int, int] = {}  # partition id -> bytes it reads that are made outside it after its first member

    def held_if_in(node: Node, p: int) -> int:
        """Bytes ``node`` reads that are computed outside ``p`` after ``p`` opened: joining, the
        delegate keeps them alive together with ``p``'s others until it runs."""
        return sum(
            _bytes(u)
            for u in node.all_input_nodes
            if part.get(u) != p and u.op != "placeholder" and order[u] > first[p]
        )

    def taint_if_in(node: Node, p: int | None) -> int:
        """``taint[node]`` were ``node`` in partition ``p`` (None: outside every partition)."""
        bits = 0
        for u in node.all_input_nodes:
            bits |= taint.get(u, 0)
            q = part.get(u)
            if q is not None and q != p:
                bits |= 1 << q
        return bits

    for node in graph.nodes:
        if node not in supported:
            taint[node] = taint_if_in(node, None)
            continue
        chosen = None
        for p in _candidates(node, part, recent):
            if order[node] - last[p] > _MAX_GAP:
                continue  # fusing would run it far from where the graph computes it
            extra = held_if_in(node, p)
            if extra and held[p] + extra > _MAX_HELD:
                continue  # fusing would keep large values alive together until the delegate runs
            if not taint_if_in(node, p) >> p:  # no ancestor partition numbered p or later
                chosen = p
                held[p] += extra
                break
        if chosen is None:
            chosen = next(ids)
            members[chosen] = []
            first[chosen], held[chosen] = order[node], 0
            recent = [chosen, *recent][:_RECENT]
        part[node] = chosen
        members[chosen].append(node)
        last[chosen] = order[node]
        taint[node] = taint_if_in(node, chosen)
    return [members[p] for p in sorted(members)]


# Siblings are looked up only through inputs read by a few nodes (an activation feeding q/k/v),
# not through widely shared ones (a mask or a constant read everywhere): that would make the
# sweep quadratic and pull far-apart ops into one delegate.
_MAX_SIBLINGS = 8
# A node joins a partition only within this many nodes of the partition's latest member: a
# backward op that reads a forward value (a recomputed activation's matmul, a gradient product)
# would otherwise join a forward delegate through that value, and the fused delegate computes it
# in the forward -- the value then lives across the step, defeating the recomputation.
_MAX_GAP = 64
# Bytes of values computed outside a partition between its members that it may read (all alive
# together until the delegate runs): q/k/v's dequantised weights join (SigLIP: 3 x 2.25 MiB), a
# language model head's row blocks (15.5 MiB each) do not.
_MAX_HELD = 8 * 2**20
# Independent ops close in topological order (q/k/v, the gradient matmuls of one layer) share a
# delegate: an op may also join one of the last few partitions opened.
_RECENT = 4


def _candidates(node: Node, part: dict[Node, int], recent: list[int]) -> list[int]:
    """Partitions ``node`` may join, nearest first: its producers', its siblings' (other
    supported readers of the same inputs, already placed), then the last partitions opened."""
    seen: list[int] = []
    for u in node.all_input_nodes:
        p = part.get(u)
        if p is not None and p not in seen:
            seen.append(p)
    for u in node.all_input_nodes:
        if len(u.users) > _MAX_SIBLINGS:
            continue
        for sibling in u.users:
            p = part.get(sibling)
            if p is not None and p not in seen:
                seen.append(p)
    return seen + [p for p in recent if p not in seen]
