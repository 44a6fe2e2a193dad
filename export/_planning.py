"""ExecuTorch's greedy memory plan, computed in less time: the same offsets, the same arena.

Why: ``executorch.exir.memory_planning.greedy`` places tensors largest first; for each one,
``pick_shared_obj`` asks every shared object (a slot of the arena) whether any of its
allocations is alive at the same time (``_does_not_overlap``) and, failing that, how high the
live ones reach (``_find_max_overlapping_allocations_offset``). Both walk the object's whole
allocation list in Python, reading ``alloc.spec.lifetime`` and ``alloc.spec.allocated_memory``
(a property that recomputes the byte size from shape and dtype) per allocation, so planning
costs tensors x allocations. On the full ``smolvlm-256m`` LoRA export (py-spy, 20 Hz) the greedy
search took 37 s, 13 s of it in ``allocated_memory``.

What this does, within :func:`memory_planning_pass`'s ``run`` only:

* :func:`_sizes_once`: each spec's ``allocated_memory`` is computed once per alignment.
* :class:`_Allocations`: per shared object, the allocations' lifetimes and tops (offset + size)
  in arrays that grow as the planner appends to the object's list; the two questions become one
  vectorised comparison each (numpy above :data:`_SMALL` allocations, a loop over plain tuples
  below it). The answers are the upstream functions' by construction (``tests/export/
  test_planning.py`` checks them on random plans, and ``test_fuse.py`` the ``.pte`` bytes).

Plus :func:`._lookups.frozen_lookups` for the graph signature's name maps, which the pass reads per
tensor (``_is_mutable_buffer``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _lookups

__all__ = ["memory_planning_pass"]

# Below this many allocations a Python loop over tuples beats numpy's per-call overhead.
_SMALL = 24


@contextlib.contextmanager
def _sizes_once() -> Iterator[None]:
    """Within the block, each tensor spec's ``allocated_memory`` is computed once per alignment.
    Planning does not change shapes or dtypes; ``realign`` changes the alignment, which is part
    of the key."""
    from executorch.exir.tensor import TensorSpec

    upstream = TensorSpec.__dict__["allocated_memory"]
    sizes: dict[tuple[int, int], int] = {}
    keep: list[Any] = []  # the specs keyed by id stay alive, so no id is reused within the block

    @functools.wraps(upstream.fget)
    def allocated_memory(self: Any) -> int:
        key = (id(self), self.alignment)
        size = sizes.get(key)
        if size is None:
            keep.append(self)
            size = sizes[key] = upstream.fget(self)
        return size

    TensorSpec.allocated_memory = property(allocated_memory)
    try:
        yield
    finally:
        TensorSpec.allocated_memory = upstream


class _Allocations:
    """One shared object's allocations as ``(first use, last use, offset + size)`` rows, kept in
    step with its ``allocations`` list (the planner only appends; anything else rebuilds)."""

    __slots__ = ("source", "rows", "table")

    def __init__(self, source: list[Any]) -> None:
        self.source = source
        self.rows: list[tuple[int, int, int]] = []
        self.table = np.empty((0, 3), dtype=np.int64)

    def sync(self, allocations: list[Any]) -> None:
        if allocations is not self.source or len(allocations) < len(self.rows):
            self.__init__(allocations)
        if len(allocations) > len(self.rows):
            self.rows.extend(
                (alloc.spec.lifetime[0], alloc.spec.lifetime[1], alloc.offset + alloc.spec.allocated_memory)
                for alloc in allocations[len(self.rows) :]
            )
            if len(self.rows) >= _SMALL:
                self.table = np.asarray(self.rows, dtype=np.int64)

    def any_alive(self, first: int, last: int) -> bool:
        """Whether an allocation is alive at some step in ``[first, last]``."""
        if len(self.rows) < _SMALL:
            return any(not (last < start or first > end) for start, end, _ in self.rows)
        table = self.table
        return bool(((table[:, 0] <= last) & (table[:, 1] >= first)).any())

    def highest_alive(self, first: int, last: int) -> int:
        """The highest top of the allocations alive at some step in ``[first, last]`` (0: none)."""
        if len(self.rows) < _SMALL:
            return max((top for start, end, top in self.rows if not (last < start or first > end)), default=0)
        table = self.table
        tops = table[(table[:, 0] <= last) & (table[:, 1] >= first), 2]
        return int(tops.max()) if tops.size else 0


@contextlib.contextmanager
def _indexed_overlaps() -> Iterator[None]:
    """Within the block, ExecuTorch's two overlap questions read :class:`_Allocations` indexes."""
    from executorch.exir import memory_planning

    indexes: dict[int, tuple[Any, _Allocations]] = {}

    def allocations_of(sobj: Any) -> _Allocations:
        entry = indexes.get(id(sobj))
        if entry is None or entry[0] is not sobj:
            entry = indexes[id(sobj)] = (sobj, _Allocations(sobj.allocations))
        index = entry[1]
        index.sync(sobj.allocations)
        return index

    upstream = (memory_planning._does_not_overlap, memory_planning._find_max_overlapping_allocations_offset)

    @functools.wraps(upstream[0])
    def does_not_overlap(sobj: Any, spec: Any) -> bool:
        return not allocations_of(sobj).any_alive(spec.lifetime[0], spec.lifetime[1])

    @functools.wraps(upstream[1])
    def max_overlapping_offset(sobj: Any, spec: Any) -> int:
        return allocations_of(sobj).highest_alive(spec.lifetime[0], spec.lifetime[1])

    memory_planning._does_not_overlap = does_not_overlap
    memory_planning._find_max_overlapping_allocations_offset = max_overlapping_offset
    try:
        yield
    finally:
        memory_planning._does_not_overlap, memory_planning._find_max_overlapping_allocations_offset = upstream


def memory_planning_pass() -> Any:
    """ExecuTorch's default ``MemoryPlanningPass`` whose ``run`` plans with the shortcuts above
    (sizes once, indexed overlaps, signature maps once); everything else is the default pass's,
    so the plan is the same."""
    from executorch.exir.passes import MemoryPlanningPass

    class IndexedMemoryPlanningPass(MemoryPlanningPass):
        def run(self, graph_module: Any, graph_signature: Any = None) -> Any:
            with _lookups.frozen_lookups(), _sizes_once(), _indexed_overlaps():
                return super().run(graph_module, graph_signature)

    return IndexedMemoryPlanningPass()
