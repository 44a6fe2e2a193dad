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
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mobile_peft.core import contract
from mobile_peft.core.errors import ConfigError, MissingExtraError

from . import _delegate_passes, _fuse

__all__ = [
    "PteOptions",
    "PteTrainer",
    "capture",
    "export_pte",
    "joint_graph",
    "lower",
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


# Ops that return their input's values, which ExecuTorch runs as copies (``alias_copy``,
# ``expand_copy``, ``clone``; only ``view_copy`` becomes an aliasing ``memory.view``).
_IDENTITY_WHEN_SAME_LAYOUT = frozenset(
    getattr(torch.ops.aten, name).default
    for name in ("alias", "clone", "expand")
    if hasattr(torch.ops.aten, name)
)


def _drop_identity_copies(ep: torch.export.ExportedProgram) -> int:
    """``alias(x)``, ``clone(x)``, ``expand(x, x.shape)`` -> ``x`` where the result has ``x``'s
    dtype, shape and strides. ExecuTorch runs each as a copy, and the joint graph keeps them
    across the step: autograd saves the softmax output as an ``alias`` for the backward and
    dropout with ``p=0`` (attention's, in training mode) is a ``clone`` -- in ``smolvlm-256m``'s
    SigLIP, 48 MiB each per layer (1,024 patches, 12 heads) held from the forward to the
    backward beside the softmax output itself. The graph is functional (nothing writes to a value;
    a graph with a mutating op is left alone), so the copy and its input are interchangeable. An
    output is never replaced (an output must not alias an input or another output). Returns how
    many copies were dropped."""
    graph = ep.graph_module.graph
    mutating = [
        n
        for n in graph.nodes
        if n.op == "call_function" and getattr(getattr(n.target, "_schema", None), "is_mutable", False)
    ]
    if mutating:
        logger.debug("identity copies kept: the graph mutates (%s)", mutating[0].target)
        return 0
    dropped = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target in _IDENTITY_WHEN_SAME_LAYOUT):
            continue
        source, result = node.args[0], node.meta.get("val")
        value = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        if not (isinstance(result, torch.Tensor) and isinstance(value, torch.Tensor)):
            continue
        if (result.dtype, result.shape, result.stride()) != (value.dtype, value.shape, value.stride()):
            continue
        if any(u.op == "output" for u in node.users):
            continue
        node.replace_all_uses_with(source)
        graph.erase_node(node)
        dropped += 1
    ep.graph_module.recompile()
    return dropped


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
    before = int(_storage_liveness(nodes, position).max())
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
    import numpy as np

    end = _alias_ends(nodes, position)
    delta = np.zeros(len(nodes) + 1, dtype=np.int64)
    for node in nodes:
        size = _bytes(node)
        if size:
            delta[position[node]] += size
            delta[end[node] + 1] -= size
    return np.cumsum(delta)[:-1]


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


def _liveness(nodes: list[torch.fx.Node], position: dict[torch.fx.Node, int]) -> Any:
    """Bytes alive at each position of ``nodes`` (a value lives from its node to its last reader)."""
    import numpy as np

    delta = np.zeros(len(nodes) + 1, dtype=np.int64)
    for node in nodes:
        size = _bytes(node)
        if size:
            delta[position[node]] += size
            delta[max((position[u] for u in node.users), default=position[node]) + 1] -= size
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


def simplify(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The graph rewrites that cut portable-kernel time without changing a value (in place)."""
    permutes, powers, copies = _compose_permutes(ep), _small_powers_as_mul(ep), _drop_identity_copies(ep)
    logger.debug(
        "simplified: %d permute pairs composed, %d small powers as mul, %d identity copies dropped",
        permutes,
        powers,
        copies,
    )
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
# for 12.0 ms/step. Then the joint graph's transposes, the largest ExecuTorch kernel left after the
# graph rewrites, and attention's batched matmuls (``mobile-peft bench levers``, tiny LoRA batch 8:
# 51.6 -> 31.4 ms per step). Batched matmuls were kept out for a while because, delegated with the
# transposes, they enlarged the planned arena (tiny 15.0 -> 22.1 MiB); that came from delegates
# joining partitions far back in the graph, which the partitioner no longer allows
# (``_partition._MAX_GAP``), and with the identity copies dropped the same levers run now gives
# 13.7 MiB with them against 14.0 without, and 30.7 against 32.0 ms per step.
MATMUL_OPS = ("LinearConfig", "AddmmConfig", "MMConfig")
TRANSPOSE_OPS = (*MATMUL_OPS, "PermuteConfig")
XNNPACK_OPS = (*TRANSPOSE_OPS, "BMMConfig")


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
    per-delegate passes only where they change something (:mod:`._delegate_passes`). False runs
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
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS

    from ._partition import LinearTimeXnnpackPartitioner

    unknown = sorted(set(xnnpack_ops) - {c.__name__ for c in ALL_PARTITIONER_CONFIGS})
    if unknown:
        raise ConfigError(
            f"unknown XNNPACK partitioner config(s) {unknown}; expected names such as {list(XNNPACK_OPS)}."
        )
    configs = [c for c in ALL_PARTITIONER_CONFIGS if c.__name__ in xnnpack_ops]
    partitioner = LinearTimeXnnpackPartitioner(
        configs=configs, force_non_static_weights_for_f32_linear=True, fast=fast
    )
    with contextlib.ExitStack() as shortcuts:
        if fast:
            shortcuts.enter_context(_fuse.fast_fusion(stable=keep_order))
            shortcuts.enter_context(_delegate_passes.only_changing_passes())
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
    options: PteOptions = PteOptions(),
) -> dict[str, Any]:
    """capture -> joint graph -> (:func:`recompute_frozen`, :func:`simplify`,
    :func:`recompute_activations`) -> lower -> serialise, as ``options`` say; returns what the
    manifest records."""
    _require_executorch()
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
