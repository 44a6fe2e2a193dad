"""The functionalisation retrace skipped only where it has nothing to do (export/_retrace.py)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from mobile_peft.export import _retrace
from mobile_peft.export.formats import _io
from mobile_peft.export.wrappers import TrainingWrapper

from .conftest import BATCH


class _InPlace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y.add_(1)
        return y


class _Composite(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, x)  # aten.linear: CompositeImplicitAutograd


def test_programs_with_work_left_are_not_skipped():
    x = torch.randn(3, 3)
    for module in (_InPlace(), _Composite()):
        ep = torch.export.export(module, (x,), strict=False)
        assert not _retrace.is_functional_core(ep)
        with _retrace.skip_functional_retrace():
            assert ep.run_decompositions({}) is not ep
    core = torch.export.export(_Composite(), (x,), strict=False).run_decompositions()
    assert _retrace.is_functional_core(core)
    original = torch.export.ExportedProgram.run_decompositions
    with _retrace.skip_functional_retrace():
        assert core.run_decompositions({}) is core
        assert core.run_decompositions() is not core  # a table still decomposes
    assert torch.export.ExportedProgram.run_decompositions is original


def _fields_apart_from_delegates(a, b, path="program"):
    """Paths where two deserialised programs differ, delegate payloads aside (their XNNPACK
    flatbuffers carry debug handles, which follow each node's provenance metadata)."""
    if dataclasses.is_dataclass(a):
        return [d for f in dataclasses.fields(a) for d in _fields_apart_from_delegates(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in _fields_apart_from_delegates(u, v, f"{path}[{i}]")]
    if path.endswith(".data") and "backend_delegate_data" in path:
        return [] if len(a) == len(b) else [f"{path}: {len(a)} vs {len(b)} bytes"]
    return [] if a == b else [path]


def test_skipping_the_retrace_trains_identically(lora_model, tmp_path, monkeypatch):
    """The joint graph lowered with and without the skip: the same program apart from delegate
    debug handles, and bitwise the same losses and parameters over three SGD steps."""
    pytest.importorskip("executorch")
    from executorch.exir._serialize._program import deserialize_pte_binary

    from mobile_peft.export import pte

    model, _ = lora_model
    inputs, _, _ = _io(model, BATCH, 0, with_weights=True)
    skip = _retrace.skip_functional_retrace
    programs, runs = {}, {}
    for skipped in (True, False):
        monkeypatch.setattr(_retrace, "skip_functional_retrace", skip if skipped else contextlib.nullcontext)
        joint = pte.joint_graph(pte.capture(TrainingWrapper(model), inputs))
        if skipped:
            assert _retrace.is_functional_core(joint)
        program, data = pte.serialise(pte.lower({"forward": joint}), tmp_path / str(skipped))
        decoded = deserialize_pte_binary(program.read_bytes())
        programs[skipped] = getattr(decoded, "program", decoded)
        trainer = pte.PteTrainer(program, data)
        losses = [trainer.step(inputs, lr=0.5) for _ in range(3)]
        runs[skipped] = (losses, {k: v.clone() for k, v in trainer.parameters().items()})
    assert _fields_apart_from_delegates(programs[True], programs[False]) == []
    assert runs[True][0] == runs[False][0]
    assert runs[True][1].keys() == runs[False][1].keys()
    for name, value in runs[True][1].items():
        assert torch.equal(value, runs[False][1][name]), name
