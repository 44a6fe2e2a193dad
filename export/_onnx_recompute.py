"""Recompute dequantised frozen weights in the backward of an ORT training graph.

ORT's gradient builder differentiates ``MatMul(x, Transpose(dequant(q)))`` into a backward
``FusedMatMul(dy, Transpose(dequant(q)), transB=1)`` that reads the forward's fp32 copy, so every
adapted frozen weight stays alive in fp32 from its forward use to its backward: for
``smolvlm-256m`` with language+projector adapters that is ~400 MiB, about as much as the int8
backbone itself. This pass gives each such backward node its own copy, rebuilt from the stored
int8/int4 values right before it, so the forward copy dies after the forward matmul.

The copy is built in the *transposed* order, ``Mul(Cast(Transpose(q)), s[None, :])`` for int8,
and the analogous unpacking for int4: the same multiplications on the same values, so the
result is bitwise equal to ``Transpose(dequant(q))``, but no node in it equals a forward node.
That matters because ORT's common-subexpression elimination (on from the basic optimisation
level up, and the default is all) would otherwise merge a verbatim copy back into the forward chain. The int8/int4
``Transpose`` moves 1 byte (or half a byte) per weight instead of the 4 the fp32 one did.

Shapes: ``q`` int8 ``[rows, in]`` or packed uint8 ``[rows, in / 2]``, ``s`` ``[rows]`` or
``[rows, in / group]`` (fp32 in the graph: the ONNX export stores int4's fp16 scales as fp32); the
result is fp32 ``[in, rows]``. ``rows`` is a row block of the layer when it dequantises in blocks
(``QuantLinear.row_blocks``): then ``q`` and ``s`` are the forward's own ``Slice`` outputs (or the
``Split`` ORT fuses them into), which are integer (or small) and cheap to keep.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["QuantizedWeight", "recompute_dequantised_weights"]

logger = logging.getLogger(__name__)

# ORT's gradient builder names every node it adds after the forward node it differentiates.
_GRAD_MARK = "_Grad/"


@dataclass(frozen=True)
class QuantizedWeight:
    """A ``QuantLinear``'s stored tensors as the ONNX graph names them."""

    qweight: str
    scales: str
    mode: str  # "int8" | "int4"
    in_features: int
    group_size: int


class _Graph:
    def __init__(self, graph: Any, stored: set[str]) -> None:
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        # inputs fed at run time (ORT lists the parameters as inputs; an initializer that is
        # also listed is still a constant)
        self.inputs = {value.name for value in graph.input} - {init.name for init in graph.initializer}
        # tensors computed from the quantised weights' stored tensors and constants alone (one
        # pass in the graph's topological order): only those can be rebuilt in the backward
        self.from_weights: set[str] = set()
        runtime = self.inputs - stored
        for node in graph.node:
            reads = [name for name in node.input if name]
            if _GRAD_MARK in node.name or any(name in runtime for name in reads):
                runtime.update(node.output)
            elif any(name in stored or name in self.from_weights for name in reads):
                self.from_weights.update(node.output)
        self._names: set[str] = {node.name for node in graph.node} | set(self.producer)
        self._names |= {value.name for value in graph.input} | {init.name for init in graph.initializer}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def ancestors(self, tensor: str) -> tuple[list[Any], set[str], set[str]]:
        """The nodes computing ``tensor``, the tensors among them, and the graph inputs they read."""
        nodes: dict[int, Any] = {}
        leaves: set[str] = set()
        stack = [tensor]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if not name or name in seen:
                continue
            seen.add(name)
            node = self.producer.get(name)
            if node is None:
                if name in self.inputs:
                    leaves.add(name)
                continue  # an initializer: a constant
            nodes[id(node)] = node
            stack.extend(node.input)
        return list(nodes.values()), seen, leaves


def _source(chain: list[Any], tensors: set[str], stored: str) -> str | None:
    """The tensor the chain dequantises from ``stored``: ``stored`` itself, or the forward's
    row block of it (a ``Slice``, or the ``Split`` ORT fuses a layer's block slices into);
    None for any other way of reading it."""
    readers = [node for node in chain if stored in node.input]
    if all(node.op_type not in ("Slice", "Split", "Gather") for node in readers):
        return stored
    if len(readers) != 1 or readers[0].op_type == "Gather":
        return None
    used = [out for out in readers[0].output if out in tensors]
    return used[0] if len(used) == 1 else None


def _match(graph: _Graph, tensor: str, weights: Mapping[str, QuantizedWeight]) -> tuple[QuantizedWeight, str, str] | None:
    """``tensor`` = ``Transpose(dequant(q))`` of one quantised weight, computed from nothing but
    its stored tensors and constants: (the weight, its rows' q, its rows' scales)."""
    node = graph.producer.get(tensor)
    if tensor not in graph.from_weights or node is None or node.op_type != "Transpose":
        return None
    perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
    if perm != [[1, 0]]:
        return None
    chain, tensors, leaves = graph.ancestors(node.input[0])
    found = [weights[leaf] for leaf in leaves if leaf in weights]
    if len(found) != 1 or leaves != {found[0].qweight, found[0].scales}:
        return None
    weight = found[0]
    q, s = _source(chain, tensors, weight.qweight), _source(chain, tensors, weight.scales)
    return None if q is None or s is None else (weight, q, s)


def _transposed_dequant(graph: _Graph, weight: QuantizedWeight, q: str, s: str, scope: str) -> tuple[list[Any], str]:
    """Nodes computing ``dequant(q)^T`` (fp32 ``[in, rows]``) from the stored values, and its name."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []

    def const(tag: str, value: Any, dtype: Any) -> str:
        name = graph.fresh(f"{scope}/{tag}")
        graph.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(op_type: str, inputs: list[str], tag: str, **attrs: Any) -> str:
        out = graph.fresh(f"{scope}/{tag}_output")
        nodes.append(helper.make_node(op_type, inputs, [out], name=graph.fresh(f"{scope}/{tag}"), **attrs))
        return out

    q_t = op("Transpose", [q], "Transpose", perm=[1, 0])  # integer: 1 (int8) or 1/2 (int4) byte a weight
    values = op("Cast", [q_t], "Cast", to=TensorProto.FLOAT)
    if weight.mode == "int8":
        # forward: float(q) * s[:, None]; here float(q^T) * s[None, :]
        scales = op("Unsqueeze", [s, const("axis0", [0], np.int64)], "Unsqueeze")
        return nodes, op("Mul", [values, scales], "Mul")
    # int4, forward: high = floor(p / 16), low = p - high * 16, q = interleave(low, high) - 8,
    # w = q * s per group of inputs; here the same arithmetic on p^T [in / 2, rows].
    sixteen = const("sixteen", 16.0, np.float32)
    high = op("Floor", [op("Div", [values, sixteen], "Div")], "Floor")
    low = op("Sub", [values, op("Mul", [high, sixteen], "Mul")], "Sub")
    axis1 = const("axis1", [1], np.int64)
    pairs = op("Concat", [op("Unsqueeze", [low, axis1], "UnsqueezeLow"),
                          op("Unsqueeze", [high, axis1], "UnsqueezeHigh")], "Concat", axis=1)  # [in/2, 2, rows]
    groups = weight.in_features // weight.group_size
    grouped = op("Reshape", [pairs, const("grouped", [groups, weight.group_size, -1], np.int64)], "Reshape")
    centred = op("Sub", [grouped, const("eight", 8.0, np.float32)], "SubOffset")
    scales = op("Cast", [s], "CastScales", to=TensorProto.FLOAT)  # [rows, groups]; a no-op on fp32 scales
    scales = op("Unsqueeze", [op("Transpose", [scales], "TransposeScales", perm=[1, 0]), axis1], "UnsqueezeScales")
    scaled = op("Mul", [centred, scales], "MulScales")  # [groups, group, rows]
    return nodes, op("Reshape", [scaled, const("shape", [weight.in_features, -1], np.int64)], "ReshapeOut")


def recompute_dequantised_weights(model: Any, weights: Mapping[str, QuantizedWeight]) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto`` training graph) in place so each backward node
    that reads a forward ``Transpose(dequant(q))`` reads its own copy, built right before it
    (see the module docstring). ``weights`` maps each quantised weight's ``qweight`` graph input
    to its description. Returns how many forward copies no longer live into the backward."""
    graph = _Graph(model.graph, {name for w in weights.values() for name in (w.qweight, w.scales)})
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        if _GRAD_MARK in node.name:
            for name in node.input:
                if name:
                    consumers[name].append(node)
    copies: dict[int, list[Any]] = {}  # id(first backward consumer) -> nodes to run before it
    replaced = 0
    for tensor, readers in consumers.items():
        matched = _match(graph, tensor, weights)
        if matched is None:
            continue
        weight, q, s = matched
        scope = graph.fresh(f"/recompute/{weight.qweight}")
        nodes, copy = _transposed_dequant(graph, weight, q, s, scope)
        for reader in readers:
            reader.input[:] = [copy if name == tensor else name for name in reader.input]
        copies.setdefault(id(readers[0]), []).extend(nodes)
        replaced += 1
    if replaced:
        ordered = []
        for node in model.graph.node:
            ordered.extend(copies.get(id(node), ()))
            ordered.append(node)
        del model.graph.node[:]
        model.graph.node.extend(ordered)
    kept = sum(1 for node in model.graph.node if _GRAD_MARK in node.name
               for name in node.input if name in graph.from_weights)
    logger.debug("recomputed %d dequantised weights in the backward; %d reads still from the forward", replaced, kept)
    return replaced
