"""Memory levers on the joint training graph: recompute in the backward what it would otherwise
keep alive from the forward, where the graph's liveness says that lowers the step's peak.

:func:`recompute_frozen` re-dequantises frozen weights; :func:`recompute_activations` rebuilds
cheap activations (attention's softmax above all) from values the backward still holds. Both
judge candidates with :func:`_recompute_where_it_pays` on the graph's liveness (:func:`_liveness`:
bytes of every value from its definition to its last reader; :func:`_storage_liveness`: the same
with views keeping their base alive, as ExecuTorch's plan does). Used by :mod:`.pte`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["recompute_activations", "recompute_frozen"]

logger = logging.getLogger(__name__)


def _frozen_values(ep: torch.export.ExportedProgram) -> set[torch.fx.Node]:
    """The nodes whose value is the same every step: frozen inputs (buffers, lifted constants,
    parameters that get no gradient) and the deterministic functional ops computed from those
    alone (the int8 weights' dequantisation, their transposes, rotary tables)."""
    from torch.export.graph_signature import InputKind, OutputKind

    sig = ep.graph_signature
    trained = {s.target for s in sig.output_specs if s.kind == OutputKind.GRADIENT_TO_PARAMETER}
    frozen_inputs = {
        s.arg.name
        for s in sig.input_specs
        if s.kind in (InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
        or s.kind == InputKind.PARAMETER
        and s.target not in trained
    }
    frozen: set[torch.fx.Node] = set()
    for node in ep.graph_module.graph.nodes:
        if node.op == "placeholder":
            if node.name in frozen_inputs:
                frozen.add(node)
        elif (
            node.op == "call_function"
            and isinstance(node.target, torch._ops.OpOverload)
            and not node.target._schema.is_mutable
            and torch.Tag.nondeterministic_seeded not in node.target.tags
            and all(i in frozen for i in node.all_input_nodes)
        ):
            frozen.add(node)
    return frozen


def recompute_frozen(ep: torch.export.ExportedProgram) -> int:
    """Recompute, right before the backward needs it, a value the backward reads that depends on
    frozen inputs alone, instead of keeping the forward's copy alive across the step -- where that
    lowers the step's peak.

    The frozen backbone is int8; each linear dequantises its weight to fp32 (and, in edge
    dialect, every transpose of it is a copy). The backward's input gradient ``dY @ W`` reads that
    fp32 weight again, so the memory plan keeps every adapted-through layer's dequantised weight
    from its forward to its backward: four bytes per backbone parameter at the step's peak, where
    the backbone itself holds one. Recomputing costs one more dequantisation per such weight per
    step, and its transient (the int8 -> fp32 copy, then the scaled weight) at the backward's
    reader. Each candidate is judged on the graph's liveness (:func:`_recompute_where_it_pays`):
    a weight the backward reads right after the loss (the tied LM head, 113 MB in
    ``smolvlm-256m``) is better kept. A value outside the forward that only the backward reads is
    moved to its first reader the same way. Returns how many values are recomputed."""
    graph = ep.graph_module.graph
    forward = _forward_set(graph)
    frozen = _frozen_values(ep)
    readers: dict[torch.fx.Node, list[torch.fx.Node]] = {}  # candidate -> its backward readers
    for node in graph.nodes:
        if node in forward or node in frozen or node.op != "call_function":
            continue
        for value in node.all_input_nodes:
            if value in frozen and value.op != "placeholder":
                readers.setdefault(value, []).append(node)
    chosen = _recompute_where_it_pays(ep, {v: (_chain(v), r) for v, r in readers.items()})
    logger.debug("recomputed %d of %d frozen values the backward reads", chosen, len(readers))
    return chosen


# What :func:`recompute_activations` may recompute: values, layouts, element-wise maths and
# reductions over a row, and at most one matrix product per value (attention's ``q @ k^T``).
_MATMULS = frozenset(getattr(torch.ops.aten, n).default for n in ("bmm", "mm", "addmm"))
_CHEAP = frozenset(
    getattr(getattr(torch.ops.aten, name), overload)
    for name, overload in (
        *(
            (n, "default")
            for n in ("view", "_unsafe_view", "permute", "expand", "unsqueeze", "squeeze", "alias")
        ),
        *(
            (n, "default")
            for n in (
                "clone",
                "_softmax",
                "_log_softmax",
                "rsqrt",
                "exp",
                "neg",
                "sigmoid",
                "tanh",
                "gelu",
                "silu",
            )
        ),
        *((n, "Tensor") for n in ("mul", "div", "add", "sub")),
        *((n, "Scalar") for n in ("mul", "div", "add", "sub")),
        ("mean", "dim"),
        ("sum", "dim_IntList"),
        ("_to_copy", "default"),
    )
    if hasattr(getattr(torch.ops.aten, name, None), overload)
)
_MAX_CHAIN = 12


def recompute_activations(ep: torch.export.ExportedProgram) -> int:
    """Recompute, right before the backward reads it, a forward activation that can be rebuilt
    cheaply from values the backward still holds at that point, instead of keeping it alive
    across the step -- where that lowers the step's peak (:func:`_recompute_where_it_pays`).

    The main case is attention: the backward keeps every layer's softmax output (``smolvlm-256m``'s
    SigLIP: 12 heads x 1,024 x 1,024 fp32, 48 MiB per layer, twelve layers) for the ``dV`` product
    and the softmax gradient, while it keeps ``q`` and ``k`` anyway for ``dQ``/``dK``. Recomputing
    costs the ``q @ k^T`` product and the softmax once more per layer, at the layer's backward,
    where one layer's probabilities are alive instead of all of them. The same rule takes any
    chain of up to twelve layout, element-wise, row-reduction and at most one matrix-product ops
    (``_CHEAP``) that starts from values alive at the reader (so no other value lives longer).
    Returns how many values are recomputed."""
    graph = ep.graph_module.graph
    _split_forward_views(graph, _forward_set(graph))
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    forward = _forward_set(graph)
    frozen = _frozen_values(ep)
    end = _alias_ends(nodes, position)
    readers: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for node in nodes:
        if node in forward or node.op != "call_function" or not node.users:  # not: metadata asserts
            continue
        for value in node.all_input_nodes:
            if value in forward and value not in frozen and value.op == "call_function":
                readers.setdefault(value, []).append(node)
    candidates = {}
    for value, backward_readers in readers.items():
        chain = _chain_from_live(value, position[backward_readers[0]], end)
        if chain is not None:
            candidates[value] = (chain, backward_readers)
    if not logger.isEnabledFor(logging.DEBUG):
        return _recompute_where_it_pays(ep, candidates)
    before = int(_storage_liveness(nodes, position).max())  # the peaks only for the debug line
    chosen = _recompute_where_it_pays(ep, candidates)
    nodes = list(graph.nodes)
    after = int(_storage_liveness(nodes, {n: i for i, n in enumerate(nodes)}).max())
    logger.debug(
        "recomputed %d of %d forward activations the backward reads; liveness peak %.1f -> %.1f MiB",
        chosen,
        len(readers),
        before / 2**20,
        after / 2**20,
    )
    return chosen


_FREE_VIEWS = frozenset((torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default))


def _split_forward_views(graph: torch.fx.Graph, forward: set[torch.fx.Node]) -> int:
    """Give the backward its own copy of each forward ``view`` it reads, right before its first
    reader there, so that the backward reads the viewed value itself: a view costs nothing
    (ExecuTorch plans it as an alias), and the value's liveness then shows how long the backward
    keeps it (through a forward view it looked dead after the forward). Returns how many views
    were split."""
    split = 0
    for node in reversed(list(graph.nodes)):  # a view of a view: the outer one first
        if node not in forward or node.op != "call_function" or node.target not in _FREE_VIEWS:
            continue
        backward = [u for u in node.users if u not in forward]
        if not backward:
            continue
        with graph.inserting_before(min(backward)):  # fx nodes compare by graph order
            copy = graph.node_copy(node)
        for user in backward:
            user.replace_input_with(node, copy)
        split += 1
    return split


def _forward_set(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The loss's ancestors (the joint graph's first output is the loss)."""
    loss = graph.output_node().args[0][0]
    forward: set[torch.fx.Node] = set()
    stack = [loss]
    while stack:
        node = stack.pop()
        if node not in forward:
            forward.add(node)
            stack.extend(node.all_input_nodes)
    return forward


def _alias_ends(nodes: list[torch.fx.Node], position: dict[torch.fx.Node, int]) -> dict[torch.fx.Node, int]:
    """The last position at which each node's storage is read, through the views made of it."""
    base: dict[torch.fx.Node, torch.fx.Node] = {}
    end: dict[torch.fx.Node, int] = {}
    for node in nodes:
        if node.op == "call_function" and node.target in _ALIASES and isinstance(node.args[0], torch.fx.Node):
            base[node] = base.get(node.args[0], node.args[0])
    for node in nodes:
        last = max((position[u] for u in node.users), default=position[node])
        root = base.get(node, node)
        end[node] = max(end.get(node, position[node]), last)
        end[root] = max(end.get(root, position[root]), last)
    return end


def _storage_liveness(nodes: list[torch.fx.Node], position: dict[torch.fx.Node, int]) -> Any:
    """Like :func:`_liveness`, but a value lives until the last reader of it or of a view of it
    (what ExecuTorch's plan keeps: a view aliases its base)."""
    return _liveness(nodes, position, _alias_ends(nodes, position))


def _chain_from_live(
    value: torch.fx.Node, reader: int, end: dict[torch.fx.Node, int]
) -> list[torch.fx.Node] | None:
    """``value``'s computation from values alive at position ``reader`` anyway (and graph inputs),
    in order, ``value`` last -- or None when it needs another op than ``_CHEAP``, more than one
    matrix product or more than ``_MAX_CHAIN`` nodes."""
    chain: list[torch.fx.Node] = []
    seen: set[torch.fx.Node] = set()

    def visit(node: torch.fx.Node, root: bool = False) -> bool:
        if node in seen or node.op == "placeholder":
            return True
        if not root and end[node] >= reader and node.target not in _FREE_VIEWS:
            return True  # alive there anyway (a view is recomputed too: reading it keeps its base)
        if node.op != "call_function" or node.target not in _CHEAP | _MATMULS:
            return False
        seen.add(node)
        if len(seen) > _MAX_CHAIN or not all(visit(i) for i in node.all_input_nodes):
            return False
        chain.append(node)
        return True

    if not visit(value, root=True) or sum(n.target in _MATMULS for n in chain) > 1:
        return None
    return chain


def _recompute_where_it_pays(
    ep: torch.export.ExportedProgram,
    candidates: dict[torch.fx.Node, tuple[list[torch.fx.Node], list[torch.fx.Node]]],
) -> int:
    """Recompute each candidate ``value -> (chain, backward readers)`` right before its first
    backward reader, instead of keeping it alive from its definition, where that pays on the
    graph's liveness (bytes of every value from its definition to its last reader, views free):
    taken, largest saving first, when the peak does not rise, the recomputation's transient at
    the reader does not make a new peak, and the bytes alive summed over the step fall. Chain
    nodes left without readers die earlier; a chain that would read a value an earlier choice
    ended is not taken. Returns how many values are recomputed."""
    import numpy as np

    graph = ep.graph_module.graph
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    live = _liveness(nodes, position)
    users = {node: set(node.users) for node in nodes}
    last = {node: max((position[u] for u in node.users), default=position[node]) for node in nodes}
    chosen = []
    by_saving = sorted(candidates, key=lambda v: -_bytes(v) * (position[candidates[v][1][-1]] - position[v]))
    for value in by_saving:
        chain, readers = candidates[value]
        delta = np.zeros(len(nodes) + 1, dtype=np.int64)
        moved = {value: set(readers)}  # node -> users it loses
        ends = {}
        for node in reversed(chain):  # users before inputs: a node left without users dies
            remaining = users[node] - moved.get(node, set())
            new_last = max((position[u] for u in remaining), default=None)
            ends[node] = new_last
            if new_last is None:
                for i in node.all_input_nodes:
                    moved.setdefault(i, set()).add(node)
                start = position[node]
            else:
                start = new_last + 1
            if start <= last[node]:
                delta[start] -= _bytes(node)
                delta[last[node] + 1] += _bytes(node)
        first = position[readers[0]]
        in_chain = set(chain)
        if any(
            last[i] < first
            for n in chain
            for i in n.all_input_nodes
            if i not in in_chain and i.op != "placeholder"
        ):
            continue  # it would keep a value alive that is dead by then (an earlier choice ended it)
        clone_last = max(position[r] for r in readers)
        delta[first] += _bytes(value)  # the recomputed value, from its first reader to its last
        delta[clone_last + 1] -= _bytes(value)
        transient = max((_bytes(n) for n in chain if n is not value), default=0)
        trial = live + np.cumsum(delta)[:-1]
        if max(trial.max(), trial[first] + transient) > live.max() or trial.sum() >= live.sum():
            continue
        live = trial
        for node in chain:
            users[node] -= moved.get(node, set())
            last[node] = position[node] if ends[node] is None else ends[node]
        chosen.append((value, chain, readers))
    for value, chain, readers in chosen:
        copy = _clone_chain(graph, chain, before=readers[0])
        for reader in readers:
            reader.replace_input_with(value, copy)
    graph.eliminate_dead_code()
    ep.graph_module.recompile()
    return len(chosen)


_ALIASES = frozenset(
    getattr(torch.ops.aten, name).default
    for name in ("view", "_unsafe_view", "unsqueeze", "squeeze", "expand", "alias")
    if hasattr(getattr(torch.ops.aten, name), "default")
)


def _bytes(node: torch.fx.Node) -> int:
    """Bytes ``node`` allocates (0 for a view: ExecuTorch plans views as aliases)."""
    if node.op != "call_function" or node.target in _ALIASES:
        return 0
    val = node.meta.get("val")
    values = val if isinstance(val, tuple | list) else [val]
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def _liveness(
    nodes: list[torch.fx.Node], position: dict[torch.fx.Node, int], end: dict[torch.fx.Node, int] | None = None
) -> Any:
    """Bytes alive at each position of ``nodes``: a value lives from its node to its last reader,
    or to ``end[node]`` when ``end`` is given."""
    import numpy as np

    delta = np.zeros(len(nodes) + 1, dtype=np.int64)
    for node in nodes:
        size = _bytes(node)
        if size:
            last = end[node] if end is not None else max((position[u] for u in node.users), default=position[node])
            delta[position[node]] += size
            delta[last + 1] -= size
    return np.cumsum(delta)[:-1]


def _chain(value: torch.fx.Node) -> list[torch.fx.Node]:
    """``value``'s computation from the graph's inputs, in order (``value`` last)."""
    chain: list[torch.fx.Node] = []
    seen: set[torch.fx.Node] = set()

    def visit(node: torch.fx.Node) -> None:
        if node in seen or node.op == "placeholder":
            return
        seen.add(node)
        for i in node.all_input_nodes:
            visit(i)
        chain.append(node)

    visit(value)
    return chain


def _clone_chain(graph: torch.fx.Graph, chain: list[torch.fx.Node], before: torch.fx.Node) -> torch.fx.Node:
    """A copy of ``chain`` (:func:`_chain`) inserted before ``before``; returns its last node."""
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    with graph.inserting_before(before):
        for node in chain:
            env[node] = graph.node_copy(node, lambda n: env.get(n, n))
    return env[chain[-1]]
