"""Value-preserving rewrites of an exported program that cut the ``pte`` step's time in
ExecuTorch's portable kernels (:func:`simplify`, run by :func:`export.pte.export_pte` on the joint
training graph and on the eval program). Each returns how many nodes it rewrote; each is checked
against the program it started from in ``tests/export/test_pte.py``. What each gave:
``mobile-peft bench levers`` and the comments below (ETDump per-kernel time)."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

import torch

__all__ = ["gelu_approximation", "simplify"]

logger = logging.getLogger(__name__)


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


def _conv_args(node: torch.fx.Node) -> tuple[Any, ...] | None:
    """``(input, weight, bias, stride, padding, dilation, transposed, groups)`` of a 2-D
    ``convolution`` / ``conv2d`` call (the latter's defaults filled in), else None."""
    aten = torch.ops.aten
    if node.op != "call_function" or node.target not in (aten.convolution.default, aten.conv2d.default) or node.kwargs:
        return None
    if node.target == aten.convolution.default:
        x, w, bias, stride, padding, dilation, transposed, _, groups = node.args
    else:
        defaults = (None, [1], [0], [1], 1)  # conv2d's bias, stride, padding, dilation, groups
        x, w, bias, stride, padding, dilation, groups = (*node.args, *defaults[len(node.args) - 2 :])
        transposed = False

    def pair(v: Any) -> list[int]:
        return [*v] * 2 if len(v) == 1 else [*v]

    return x, w, bias, pair(stride), pair(padding), pair(dilation), transposed, groups


def _fake_call(graph: torch.fx.Graph, like: torch.fx.Node, op: Any, *args: Any, **kwargs: Any) -> torch.fx.Node:
    """``op(*args)`` as a new node with ``like``'s metadata and, as ``meta["val"]``, the op run on
    its inputs' fake values."""
    node = graph.call_function(op, args, kwargs)
    vals = [a.meta["val"] for a in args if isinstance(a, torch.fx.Node)]
    with torch._guards.detect_fake_mode(vals) or contextlib.nullcontext():
        val = op(*(a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args), **kwargs)
    node.meta = {**like.meta, "val": val}
    return node


def _patch_convs_as_matmuls(ep: torch.export.ExportedProgram) -> int:
    """A 2-D convolution whose stride is its kernel (no padding, dilation or groups: a ViT patch
    embedding, a 1x1 conv) -> the patches as rows (``view``, ``permute``, copy) @ the flattened
    kernel (``mm``/``addmm``, which XNNPACK runs) -> the conv's layout. ExecuTorch's portable
    ``convolution`` is a scalar loop, and XNNPACK's convolution, delegated from a joint graph,
    fails to initialise (``xnn_status_invalid_parameter``, measured on ``smolvlm-256m``): in
    ``smolvlm-256m``'s SigLIP (512x512 pixels, 16x16 patches, 768 channels) the one convolution
    was 2.1 of the 6.3 s of a language+projector step (ETDump). Returns how many were rewritten."""
    graph = ep.graph_module.graph
    aten = torch.ops.aten
    rewritten = 0
    for node in list(graph.nodes):
        conv = _conv_args(node)
        if conv is None:
            continue
        x, w, bias, stride, padding, dilation, transposed, groups = conv
        xv, wv = x.meta.get("val"), w.meta.get("val") if isinstance(w, torch.fx.Node) else None
        if not (isinstance(xv, torch.Tensor) and isinstance(wv, torch.Tensor) and xv.ndim == wv.ndim == 4):
            continue
        out, cin, kh, kw = wv.shape
        n, c, h, width = xv.shape
        if transposed or groups != 1 or stride != [kh, kw] or any(padding) or dilation != [1, 1]:
            continue
        if c != cin or h % kh or width % kw or not (xv.is_contiguous() and wv.is_contiguous()):
            continue
        hp, wp = h // kh, width // kw
        with graph.inserting_before(node):
            call = functools.partial(_fake_call, graph, node)
            patches = call(aten.view.default, x, [n, c, hp, kh, wp, kw])
            patches = call(aten.permute.default, patches, [0, 2, 4, 1, 3, 5])
            patches = call(aten.clone.default, patches, memory_format=torch.contiguous_format)
            rows = call(aten.view.default, patches, [n * hp * wp, c * kh * kw])
            kernel = call(aten.permute.default, call(aten.view.default, w, [out, c * kh * kw]), [1, 0])
            y = call(aten.mm.default, rows, kernel) if bias is None else call(aten.addmm.default, bias, rows, kernel)
            y = call(aten.permute.default, call(aten.view.default, y, [n, hp, wp, out]), [0, 3, 1, 2])
            y = call(aten.clone.default, y, memory_format=torch.contiguous_format)
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        rewritten += 1
    ep.graph_module.recompile()
    return rewritten


_TANH_GELU_C = 2 * (2 / torch.pi) ** 0.5  # 0.5 * (1 + tanh(z)) == sigmoid(2 z)


def gelu_approximation(node: torch.fx.Node) -> str:
    """The ``approximate`` argument (``"none"`` or ``"tanh"``) of an ``aten.gelu`` call."""
    return node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")


def _tanh_gelus_as_sigmoid(ep: torch.export.ExportedProgram) -> int:
    """``gelu(x, approximate="tanh")`` -> ``x * sigmoid(x * (c + c * 0.044715 * x * x))`` with
    ``c = 2 sqrt(2 / pi)``, the same function (``0.5 (1 + tanh(z)) = sigmoid(2 z)``). XNNPACK
    has only the exact GELU (:class:`._partition.ExactGeluConfig` keeps this one away from it)
    and ExecuTorch's portable ``gelu`` evaluates ``tanh`` per element: 54 ms for SigLIP's
    1,024 x 3,072 activations against 10 ms for the product chain with the sigmoid in XNNPACK
    (2 cores). Only the forward is rewritten: autograd's ``gelu_backward`` has been decomposed
    already. Returns how many were rewritten."""
    graph = ep.graph_module.graph
    aten = torch.ops.aten
    rewritten = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target == aten.gelu.default):
            continue
        x = node.args[0]
        if gelu_approximation(node) != "tanh" or not isinstance(x.meta.get("val"), torch.Tensor):
            continue
        with graph.inserting_before(node):
            call = functools.partial(_fake_call, graph, node)
            inner = call(aten.add.Tensor, call(aten.mul.Tensor, call(aten.mul.Tensor, x, x), _TANH_GELU_C * 0.044715),
                         _TANH_GELU_C)
            y = call(aten.mul.Tensor, x, call(aten.sigmoid.default, call(aten.mul.Tensor, x, inner)))
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        rewritten += 1
    ep.graph_module.recompile()
    return rewritten


def simplify(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The graph rewrites that cut portable-kernel time without changing a value (in place)."""
    convs, gelus = _patch_convs_as_matmuls(ep), _tanh_gelus_as_sigmoid(ep)
    permutes, powers, copies = _compose_permutes(ep), _small_powers_as_mul(ep), _drop_identity_copies(ep)
    logger.debug(
        "simplified: %d convolutions as matmuls, %d tanh GELUs as sigmoids, %d permute pairs composed, "
        "%d small powers as mul, %d identity copies dropped",
        convs,
        gelus,
        permutes,
        powers,
        copies,
    )
    return ep
