"""The indexed greedy memory plan answers ExecuTorch's overlap questions exactly as ExecuTorch does
(export/_planning.py); the whole ``.pte`` is compared in ``test_fuse.py``."""

from __future__ import annotations

import random

import pytest

from mobile_peft.export import _planning

pytest.importorskip("executorch")


class _Spec:
    """What the planner reads of a tensor spec: its lifetime and its size."""

    def __init__(self, first: int, last: int, size: int) -> None:
        self.lifetime = [first, last]
        self.allocated_memory = size


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("count", [5, _planning._SMALL + 40])
def test_overlap_questions_match_executorch(seed, count):
    """Random allocations appended to shared objects one by one (as the planner does), each
    question asked of every object after every append: the same answers as upstream's."""
    from executorch.exir import memory_planning
    from executorch.exir.memory_planning import AllocationSpec, SharedObject

    upstream = (memory_planning._does_not_overlap, memory_planning._find_max_overlapping_allocations_offset)
    rng = random.Random(seed)
    objects = [SharedObject(i, -1, 1 << 20, 0, 0) for i in range(3)]
    asked = 0
    with _planning._indexed_overlaps():
        indexed = (memory_planning._does_not_overlap, memory_planning._find_max_overlapping_allocations_offset)
        assert indexed != upstream
        for _ in range(count):
            first = rng.randrange(200)
            spec = _Spec(first, first + rng.randrange(30), rng.randrange(1, 4096))
            for sobj in objects:
                assert indexed[0](sobj, spec) == upstream[0](sobj, spec)
                assert indexed[1](sobj, spec) == upstream[1](sobj, spec)
                asked += 1
            rng.choice(objects).allocations.append(AllocationSpec(rng.randrange(0, 1 << 16), spec))
        objects[0].allocations = objects[0].allocations[:2]  # replaced, not appended: rebuilt
        spec = _Spec(0, 500, 16)
        assert indexed[1](objects[0], spec) == upstream[1](objects[0], spec)
    assert (memory_planning._does_not_overlap, memory_planning._find_max_overlapping_allocations_offset) == upstream
    assert asked == 3 * count


def test_sizes_are_read_once_per_alignment_and_restored():
    import torch
    from executorch.exir.tensor import TensorSpec

    spec = TensorSpec.from_tensor(torch.zeros(3, 5))
    before = TensorSpec.__dict__["allocated_memory"]
    with _planning._sizes_once():
        assert spec.allocated_memory == 64  # 60 bytes at the default 16-byte alignment
        spec.shape = [7, 5]  # a planner never does this; it shows the value is kept
        assert spec.allocated_memory == 64
        assert spec.realign(64) == 192  # a new alignment is a new key
    assert TensorSpec.__dict__["allocated_memory"] is before
    assert spec.allocated_memory == 192
