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
and memory planning's ``run`` (it only reads them) -- keyed by the object asked about, and forgets
them when the block ends. The values are the ones ExecuTorch would compute (``tests/export/
test_fuse.py`` compares the ``.pte`` bytes with ExecuTorch's own lowering and serialisation).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any

__all__ = ["frozen_lookups", "memory_planning_pass"]

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


def memory_planning_pass() -> Any:
    """ExecuTorch's default ``MemoryPlanningPass`` whose ``run`` reads the graph signature through
    :func:`frozen_lookups`; everything else is the default pass's, so the plan is the same."""
    from executorch.exir.passes import MemoryPlanningPass

    class FrozenLookupsMemoryPlanningPass(MemoryPlanningPass):
        def run(self, graph_module: Any, graph_signature: Any = None) -> Any:
            with frozen_lookups():
                return super().run(graph_module, graph_signature)

    return FrozenLookupsMemoryPlanningPass()
