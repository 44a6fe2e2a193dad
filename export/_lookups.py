"""Whole-graph lookups that ExecuTorch repeats per node, computed once where nothing can change
them.

Why: two lookups are rebuilt from scratch every time ExecuTorch asks, and it asks once per node,
so their cost is nodes x graph size:

* ``ExportGraphSignature``'s name maps (``inputs_to_parameters``, ``inputs_to_buffers``,
  ``inputs_to_lifted_tensor_constants``, ``buffers_to_mutate``) are properties that build a new
  dict from every input (or output) spec on each access. XNNPACK's partitioner reads them for
  every candidate op and its inputs (``is_param``, ``is_buffer``, ...), memory planning for every
  tensor (``_is_mutable_buffer``).
* XNNPACK's ``AddmmConfig.get_deps`` (``addmm`` and ``mm``) calls ``get_source_partitions`` on the
  whole graph for every matrix multiply it is asked about.

Measured on the full ``smolvlm-256m`` LoRA export (19,398-node joint graph; py-spy at 20 Hz, with
the eval method pre-decomposed to 10,504 nodes in that run): partitioning 212 s, of which ``get_source_partitions`` ~100 s and the signature
maps ~45 s; memory planning 182 s, of which ``inputs_to_buffers`` 164 s.

What this does: :func:`frozen_lookups` memoises both for the duration of a block in which the
graph and its signature do not change -- the partitioner's ``partition`` (it only tags nodes)
and memory planning's ``run`` (it only reads them; :func:`._planning.memory_planning_pass`) --
keyed by the object asked about, and forgets them when the block ends. :func:`serialisation_lookups`
applies it, and unlifts each delegate once, during ``to_executorch``. The values are the ones ExecuTorch would compute (``tests/export/
test_fuse.py`` compares the ``.pte`` bytes with ExecuTorch's own lowering and serialisation).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any

__all__ = ["frozen_lookups", "no_stack_traces", "serialisation_lookups"]

_SIGNATURE_MAPS = ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants", "buffers_to_mutate")
_GEMM_CONFIGS = "executorch.backends.xnnpack.partition.config.gemm_configs"


@contextlib.contextmanager
def frozen_lookups() -> Iterator[None]:
    """Within the block, each signature name map and each ``get_source_partitions`` result of
    XNNPACK's gemm configs is computed once per object (see the module docstring). Use it only
    around code that changes neither the graph nor its signature."""
    from torch.export.graph_signature import ExportGraphSignature

    cache: dict[tuple[Any, ...], Any] = {}
    keep: list[Any] = []  # the objects keyed by id stay alive, so no id is reused within the block
    originals = {name: ExportGraphSignature.__dict__[name] for name in _SIGNATURE_MAPS}

    def memoised_property(name: str, prop: property) -> property:
        @functools.wraps(prop.fget)
        def get(self: Any) -> Any:
            key = (name, id(self))
            if key not in cache:
                keep.append(self)
                cache[key] = prop.fget(self)
            return cache[key]

        return property(get)

    gemm = importlib.import_module(_GEMM_CONFIGS)
    upstream_partitions = gemm.get_source_partitions

    @functools.wraps(upstream_partitions)
    def source_partitions(graph: Any, wanted_sources: Any, *args: Any, **kwargs: Any) -> Any:
        key = ("source_partitions", id(graph), tuple(wanted_sources), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            keep.append(graph)
            cache[key] = upstream_partitions(graph, wanted_sources, *args, **kwargs)
        return cache[key]

    for name, prop in originals.items():
        setattr(ExportGraphSignature, name, memoised_property(name, prop))
    gemm.get_source_partitions = source_partitions
    try:
        yield
    finally:
        for name, prop in originals.items():
            setattr(ExportGraphSignature, name, prop)
        gemm.get_source_partitions = upstream_partitions


@contextlib.contextmanager
def serialisation_lookups(edge: Any) -> Iterator[None]:
    """Within the block (``to_executorch`` of ``edge``, an ``EdgeProgramManager``), what its
    passes recompute per delegate or per placeholder is computed once:

    * each XNNPACK delegate's program unlifted once. Every interpreting pass (spec propagation,
      dim-order legalisation, ...) runs each ``executorch_call_delegate`` on fake tensors through
      ``lowered_module.original_module.module()``, which unlifts the delegate's program into a new
      ``GraphModule`` (graph copy and code generation) each time: 16 s of the full
      ``smolvlm-256m`` LoRA export (py-spy). The delegates' programs do not change after
      lowering, and running the unlifted module does not change it.
    * the graph signature's name maps (:func:`frozen_lookups`) while spec propagation marks the
      constant placeholders (``SpecPropPass.update_placeholder_tensor_specs``, 10.5 s) and while
      the emitter writes the program (``emit_program``, 13.7 s): both only read the signature."""
    from executorch.exir.lowered_backend_module import get_lowered_backend_modules
    from executorch.exir.passes import spec_prop_pass
    from executorch.exir.program import _program
    from torch.export import ExportedProgram

    delegates = {
        id(lowered.original_module): lowered.original_module
        for name in edge.methods
        for lowered in get_lowered_backend_modules(edge.exported_program(name).graph_module)
    }
    unlifted: dict[int, Any] = {}
    upstream_module = ExportedProgram.module

    @functools.wraps(upstream_module)
    def module(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or delegates.get(id(self)) is not self:
            return upstream_module(self, *args, **kwargs)
        if id(self) not in unlifted:
            unlifted[id(self)] = upstream_module(self)
        return unlifted[id(self)]

    reading = {
        (spec_prop_pass.SpecPropPass, "update_placeholder_tensor_specs"): None,
        (_program, "emit_program"): None,
    }
    for owner, name in reading:
        upstream = getattr(owner, name)
        reading[owner, name] = upstream
        setattr(owner, name, _within_frozen_lookups(upstream))
    ExportedProgram.module = module
    try:
        yield
    finally:
        ExportedProgram.module = upstream_module
        for (owner, name), upstream in reading.items():
            setattr(owner, name, upstream)


def _within_frozen_lookups(function: Any) -> Any:
    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with frozen_lookups():
            return function(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def no_stack_traces() -> Iterator[None]:
    """Within the block, tracing records no Python stack trace per graph node
    (``torch.fx.config.do_not_emit_stack_traces``). Each one is a ``CapturedTraceback`` of the
    tracer's own stack, 16.8 s of the full ``smolvlm-256m`` LoRA export (capture, joint graph and
    the edge dialect's retraces); the ``.pte`` does not hold them (ExecuTorch emits stack traces
    only with ``emit_stacktrace``, off), so they only served error messages about nodes."""
    import torch.fx.config

    before = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = before
