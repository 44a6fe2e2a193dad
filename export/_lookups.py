"""Whole-graph lookups that ExecuTorch repeats per node or per delegate, computed once where
nothing can change them.

Why: some lookups are rebuilt from scratch every time ExecuTorch asks, and it asks once per node
(or per delegate), so their cost is nodes x graph size:

* ``ExportGraphSignature``'s name maps (``inputs_to_parameters``, ``inputs_to_buffers``,
  ``inputs_to_lifted_tensor_constants``, ``buffers_to_mutate``) are properties that build a new
  dict from every input (or output) spec on each access. XNNPACK's partitioner reads them for
  every candidate op and its inputs (``is_param``, ``is_buffer``, ...), memory planning for every
  tensor (``_is_mutable_buffer``).
* XNNPACK's ``AddmmConfig.get_deps`` (``addmm`` and ``mm``) calls ``get_source_partitions`` on the
  whole graph for every matrix multiply it is asked about.
* ``to_executorch``'s interpreting passes run every delegate on fake tensors.

Measured on the full ``smolvlm-256m`` LoRA export (19,398-node joint graph; py-spy at 20 Hz, with
the eval method pre-decomposed to 10,504 nodes in that run): partitioning 212 s, of which
``get_source_partitions`` ~100 s and the signature maps ~45 s; memory planning 182 s, of which
``inputs_to_buffers`` 164 s.

What this does: :func:`frozen_lookups` memoises the first two for the duration of a block in
which the graph and its signature do not change -- the partitioner's ``partition`` (it only tags
nodes) and memory planning's ``run`` (it only reads them; :func:`._planning.memory_planning_pass`)
-- keyed by the object asked about, and forgets them when the block ends
(:func:`signature_maps_once` is the name-map half, also used with a version key while partitions
are cut out). :func:`serialisation_lookups` applies it to the read-only steps of ``to_executorch``
and answers the delegate calls from their traced outputs. The values are the ones ExecuTorch
would compute (``tests/export/test_fuse.py`` compares the ``.pte`` bytes with ExecuTorch's own
lowering and serialisation).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any

__all__ = ["frozen_lookups", "serialisation_lookups", "signature_maps_once"]

_SIGNATURE_MAPS = ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants", "buffers_to_mutate")
_GEMM_CONFIGS = "executorch.backends.xnnpack.partition.config.gemm_configs"


@contextlib.contextmanager
def signature_maps_once(names: tuple[str, ...] = _SIGNATURE_MAPS, version: Any = None) -> Iterator[None]:
    """Within the block, each of the graph signature's name maps ``names`` is built once per
    signature -- and again whenever ``version(signature)`` (when given) changes -- instead of on
    every read."""
    from torch.export.graph_signature import ExportGraphSignature

    upstream = {name: ExportGraphSignature.__dict__[name] for name in names}
    # (signature, version, map) by (name, id): the entry holds the signature, so no id is reused
    built: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def memoised(name: str, prop: property) -> property:
        @functools.wraps(prop.fget)
        def get(self: Any) -> Any:
            current = version(self) if version is not None else None
            entry = built.get((name, id(self)))
            if entry is None or entry[0] is not self or entry[1] != current:
                entry = built[name, id(self)] = (self, current, prop.fget(self))
            return entry[2]

        return property(get)

    for name, prop in upstream.items():
        setattr(ExportGraphSignature, name, memoised(name, prop))
    try:
        yield
    finally:
        for name, prop in upstream.items():
            setattr(ExportGraphSignature, name, prop)


@contextlib.contextmanager
def frozen_lookups() -> Iterator[None]:
    """Within the block, each signature name map and each ``get_source_partitions`` result of
    XNNPACK's gemm configs is computed once per object (see the module docstring). Use it only
    around code that changes neither the graph nor its signature."""
    cache: dict[tuple[Any, ...], Any] = {}
    keep: list[Any] = []  # the graphs keyed by id stay alive, so no id is reused within the block
    gemm = importlib.import_module(_GEMM_CONFIGS)
    upstream_partitions = gemm.get_source_partitions

    @functools.wraps(upstream_partitions)
    def source_partitions(graph: Any, wanted_sources: Any, *args: Any, **kwargs: Any) -> Any:
        key = ("source_partitions", id(graph), tuple(wanted_sources), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            keep.append(graph)
            cache[key] = upstream_partitions(graph, wanted_sources, *args, **kwargs)
        return cache[key]

    gemm.get_source_partitions = source_partitions
    try:
        with signature_maps_once():
            yield
    finally:
        gemm.get_source_partitions = upstream_partitions


@contextlib.contextmanager
def serialisation_lookups(edge: Any) -> Iterator[None]:
    """Within the block (``to_executorch`` of ``edge``, an ``EdgeProgramManager``), what its
    passes recompute per delegate or per placeholder is computed once:

    * what a delegate returns on fake tensors is known without running it. Every interpreting
      pass (spec propagation, dim-order legalisation, ...) runs each ``executorch_call_delegate``
      through ``lowered_module.original_module.module()``, which unlifts the delegate's program
      into a new ``GraphModule`` (graph copy and code generation) and interprets it: 28 s of the
      full ``smolvlm-256m`` LoRA export (py-spy). But its program's outputs were traced when it
      was lowered (each output node's ``val``: shape, strides, dtype, device), so under a
      fake-tensor mode the call returns new fake tensors of those properties in the program's
      output structure (:func:`_delegate_outputs`); a delegate whose program has another kind of
      output runs as before.
    * the graph signature's name maps (:func:`frozen_lookups`) while spec propagation marks the
      constant placeholders (``SpecPropPass.update_placeholder_tensor_specs``, 10.5 s), while the
      trainable weights are tagged for the ``.ptd`` (``external_mutable_weights_pass``, which
      reads ``inputs_to_parameters`` twice per placeholder: 9.5 s of the Hydra export) and while
      the emitter writes the program (``emit_program``, 13.7 s): all three only read the
      signature."""
    import sys

    import executorch.exir.delegate  # noqa: F401  (registers the delegate call's kernels)
    import torch
    from executorch.exir.lowered_backend_module import get_lowered_backend_modules
    from executorch.exir.passes import spec_prop_pass
    from executorch.exir.program import _program

    delegates = {
        id(lowered.original_module): lowered.original_module
        for name in edge.methods
        for lowered in get_lowered_backend_modules(edge.exported_program(name).graph_module)
    }
    kernels = sys.modules["torch._higher_order_ops.executorch_call_delegate"]
    upstream_run = kernels.call_delegate_cpu
    outputs: dict[int, Any] = {}

    @functools.wraps(upstream_run)
    def run_delegate(lowered_module: Any, *args: Any) -> Any:
        if torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None:
            program = lowered_module.original_module
            if delegates.get(id(program)) is program:
                if id(program) not in outputs:
                    outputs[id(program)] = _delegate_outputs(program)
                if outputs[id(program)] is not None:
                    values, spec = outputs[id(program)]
                    fresh = [torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device=v.device) for v in values]
                    return torch.utils._pytree.tree_unflatten(fresh, spec)
        return upstream_run(lowered_module, *args)

    reading = {
        (spec_prop_pass.SpecPropPass, "update_placeholder_tensor_specs"): None,
        (_program, "external_mutable_weights_pass"): None,
        (_program, "emit_program"): None,
    }
    for owner, name in reading:
        upstream = getattr(owner, name)
        reading[owner, name] = upstream
        setattr(owner, name, _within_frozen_lookups(upstream))
    kernels.call_delegate_cpu = run_delegate
    try:
        yield
    finally:
        kernels.call_delegate_cpu = upstream_run
        for (owner, name), upstream in reading.items():
            setattr(owner, name, upstream)


def _delegate_outputs(program: Any) -> tuple[list[Any], Any] | None:
    """The traced values of a delegate program's outputs and their structure (what running its
    unlifted module returns: the user outputs, unflattened by the call spec), or None when the
    program has outputs of another kind or without a traced tensor value."""
    import torch
    from torch.export.graph_signature import OutputKind

    signature = program.graph_signature
    spec = program.call_spec.out_spec
    returned = program.graph.output_node().args[0]
    if spec is None or any(o.kind != OutputKind.USER_OUTPUT for o in signature.output_specs):
        return None
    values = [getattr(node, "meta", {}).get("val") for node in returned]
    if len(values) != len(signature.output_specs) or not all(
        isinstance(v, torch._subclasses.fake_tensor.FakeTensor) for v in values
    ):
        return None
    return values, spec


def _within_frozen_lookups(function: Any) -> Any:
    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with frozen_lookups():
            return function(*args, **kwargs)

    return wrapped
