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
import functools
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mobile_peft.core import contract
from mobile_peft.core.errors import MissingExtraError

from . import _delegate_passes, _fuse, _retrace
from ._recompute import recompute_activations, recompute_frozen

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
    ``convolution`` is a scalar loop, and XNNPACK takes only a convolution with static weights (a
    joint graph's frozen weight is a method input: its delegate fails to initialise): in
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
        if c != cin or h % kh or width % kw:
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


def simplify(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The graph rewrites that cut portable-kernel time without changing a value (in place)."""
    convs = _patch_convs_as_matmuls(ep)
    permutes, powers, copies = _compose_permutes(ep), _small_powers_as_mul(ep), _drop_identity_copies(ep)
    logger.debug(
        "simplified: %d convolutions as matmuls, %d permute pairs composed, %d small powers as mul, "
        "%d identity copies dropped",
        convs,
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
# 13.7 MiB with them against 14.0 without, and 30.7 against 32.0 ms per step. Then softmax, the
# exact GELU (:class:`._partition.ExactGeluConfig`), tanh and sigmoid: once the patch
# convolution was a matmul (:func:`simplify`), attention's softmax and SigLIP's GELU were the
# largest ExecuTorch kernels left in ``smolvlm-256m`` (ETDump); the softmax that used to come back
# as a pass-through output now lowers. Elementwise arithmetic (mul/add/sub) delegated as well
# measured 9 % faster but a 25 % larger arena on ``smolvlm-256m`` cut to 2+4 layers (544 vs 435
# MiB), so it stays in ExecuTorch's kernels.
MATMUL_OPS = ("LinearConfig", "AddmmConfig", "MMConfig")
TRANSPOSE_OPS = (*MATMUL_OPS, "PermuteConfig")
BMM_OPS = (*TRANSPOSE_OPS, "BMMConfig")
XNNPACK_OPS = (*BMM_OPS, "SoftmaxConfig", "GeluConfig", "TanhConfig", "SigmoidConfig")


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
    per-delegate passes only where they change something (:mod:`._delegate_passes`), and skip the
    functionalisation retrace of a program that is already functional (:mod:`._retrace`). False runs
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
    from ._partition import LinearTimeXnnpackPartitioner, partitioner_configs

    configs = partitioner_configs(xnnpack_ops)
    partitioner = LinearTimeXnnpackPartitioner(
        configs=configs, force_non_static_weights_for_f32_linear=True, fast=fast
    )
    with contextlib.ExitStack() as shortcuts:
        if fast:
            shortcuts.enter_context(_fuse.fast_fusion(stable=keep_order))
            shortcuts.enter_context(_delegate_passes.only_changing_passes())
            shortcuts.enter_context(_retrace.skip_functional_retrace())
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
