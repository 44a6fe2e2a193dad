"""XNNPACK's per-delegate passes run only where they change something (export/_delegate_passes.py);
the .pte bytes against ExecuTorch's own lowering are checked in test_fuse.py."""

from __future__ import annotations

import pytest
import torch

from mobile_peft.export import _delegate_passes


class _Mlp(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(8, width), torch.nn.Linear(width, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def _form(width: int, seed: int, batch: int = 2) -> tuple:
    torch.manual_seed(seed)
    return _delegate_passes.delegate_form(torch.export.export(_Mlp(width), (torch.randn(batch, 8),)))


def test_form_ignores_weights_and_sees_shapes():
    assert _form(16, seed=0) == _form(16, seed=1)  # other weights, same form
    assert _form(16, seed=0) != _form(32, seed=0)  # another parameter shape
    assert _form(16, seed=0) != _form(16, seed=0, batch=3)  # another input shape


def test_form_sees_placeholder_kinds():
    """A weight passed in as an input is another form than the same weight as a parameter."""

    # Everything but the kind is the same: the placeholder's name, order and metadata, the wiring.
    class AsInput(torch.nn.Module):
        def forward(self, p_w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, p_w)

    class AsParameter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, 8), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, self.w)

    x = torch.randn(2, 8)
    as_input = _delegate_passes.delegate_form(torch.export.export(AsInput(), (torch.randn(4, 8), x)))
    as_parameter = _delegate_passes.delegate_form(torch.export.export(AsParameter(), (x,)))
    assert as_input != as_parameter


def test_swaps_only_executorchs_pass_manager_and_restores_it():
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack import xnnpack_preprocess

    original = xnnpack_preprocess.XNNPACKPassManager
    with _delegate_passes.only_changing_passes() as swapped:
        assert swapped and xnnpack_preprocess.XNNPACKPassManager is not original
        assert issubclass(xnnpack_preprocess.XNNPACKPassManager, original)
    assert xnnpack_preprocess.XNNPACKPassManager is original
    xnnpack_preprocess.XNNPACKPassManager = type("Later", (), {})  # a later ExecuTorch's own class
    try:
        with _delegate_passes.only_changing_passes() as swapped:
            assert not swapped
    finally:
        xnnpack_preprocess.XNNPACKPassManager = original


_NOT_FOR_AN_MLP = {
    "ConvertToUpsampleBilinear2d", "ConvertToSDPAPass", "FuseBatchNormPass", "DecomposeBatchNorm",
    "DecomposeConcatenate", "RemoveGetItemPass", "InsertPadQDQPass", "Conv1dUnsqueezePass",
    "PReLUReshapePass", "PropagateCustomMetaPass",
}


def _edge(module: torch.nn.Module, *inputs: torch.Tensor) -> torch.export.ExportedProgram:
    from executorch.exir import EdgeCompileConfig, to_edge

    ep = torch.export.export(module, inputs)
    return to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).exported_program()


def test_a_pass_may_act_only_where_its_ops_are():
    """:func:`may_act` rules a pass out only when the ops it rewrites are absent: the
    concatenation pass on a graph with ``cat``, not on one without; the SDPA matcher not on a
    softmax alone (its patterns hold the batched matmuls and the scale too); a pass it has no
    rule for always runs."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack import _passes

    class Cat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x * 2], dim=1)

    class Softmax(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x, dim=-1)

    x = torch.randn(2, 8)
    cat, softmax, mlp = _edge(Cat(), x), _edge(Softmax(), x), _edge(_Mlp(16), x)
    assert _delegate_passes.may_act(_passes.DecomposeConcatenate, cat)
    assert not _delegate_passes.may_act(_passes.DecomposeConcatenate, mlp)
    assert not _delegate_passes.may_act(_passes.ConvertToSDPAPass, softmax)
    assert _delegate_passes.may_act(_passes.FuseActivationPass, mlp)
    assert not _delegate_passes.may_act(_passes.FuseActivationPass, softmax)
    assert _delegate_passes.may_act(_passes.ConvertToLinearPass, softmax)  # no rule: runs


def test_later_delegates_of_a_form_run_only_the_passes_that_changed_the_first():
    """Two delegates of one form through the swapped manager: the second runs only the passes
    that changed the first, and ends in the same form the full pass list gives it."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack import _passes, xnnpack_preprocess
    from executorch.exir import EdgeCompileConfig, to_edge

    def edge_program(seed: int) -> torch.export.ExportedProgram:
        torch.manual_seed(seed)
        ep = torch.export.export(_Mlp(16), (torch.randn(2, 8),))
        return to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).exported_program()

    full = _passes.XNNPACKPassManager(edge_program(1)).transform()
    ran: list[str] = []
    original_transform = _passes.XNNPACKPassManager.transform

    def counting(self):  # every single-pass run the swapped manager makes
        ran.extend(p.__name__ for p in self.passes)
        return original_transform(self)

    with _delegate_passes.only_changing_passes():
        manager = xnnpack_preprocess.XNNPACKPassManager
        _passes.XNNPACKPassManager.transform = counting
        try:
            manager(edge_program(0)).transform()
            first = list(ran)
            ran.clear()
            second = manager(edge_program(1)).transform()
        finally:
            _passes.XNNPACKPassManager.transform = original_transform
    every = [p.__name__ for p in _passes.XNNPACKPassManager(edge_program(0)).passes]
    # The first runs every pass that may act on a linear-relu-linear: the relu fusion, not the
    # batch-norm, concatenation or SDPA rewrites.
    assert first == [name for name in every if name not in _NOT_FOR_AN_MLP]
    assert "FuseActivationPass" in first
    assert 0 < len(ran) < len(first)  # relu/linear: some passes act, most do not
    assert _delegate_passes.delegate_form(second) == _delegate_passes.delegate_form(full)
