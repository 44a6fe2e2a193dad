"""ExecuTorch's per-node edge passes fused into fewer retraces build the same edge program
(export/_edge_passes.py); the whole ``.pte`` is compared in ``test_fuse.py``."""

from __future__ import annotations

import copy

import pytest
import torch

from mobile_peft.export import _edge_passes
from mobile_peft.export.formats import _io
from mobile_peft.export.wrappers import TrainingWrapper

from .conftest import BATCH

pytest.importorskip("executorch")


def _names(passes):
    return [getattr(p, "__wrapped__", p).__class__.__name__ for p in passes]


def test_runs_of_per_node_passes_become_one_pass_each():
    from executorch.exir import EdgeCompileConfig
    from executorch.exir.program import _program

    with _edge_passes.fused_edge_passes() as fused:
        assert fused
        pre, _ = _program._get_aten_to_edge_passes(EdgeCompileConfig())
    names = _names(pre)
    assert "Fused[ViewCopies,NormalizeTransposePass,ReplaceBrokenOpsWithFunctionalOpsPass,ScalarToTensorPass,SymToTensorPass]" in names
    assert names[-1] == "Fused[RemoveMixedTypeOperators,OpReplacePass,MemoryFormatOpsPass]"
    # the whole-graph passes between them keep their places
    assert names.index("RemoveNoopPass") == names.index(names[-1]) - 4
    unfused, _ = _program._get_aten_to_edge_passes(EdgeCompileConfig())
    assert _names(unfused)[-1] == "RemoveMixedTypeOperators"


def test_restores_executorch_and_leaves_another_pass_list_alone():
    from executorch.exir.program import _program

    original = (
        _program._get_aten_to_edge_passes,
        _program.OpReplacePass,
        _program.MemoryFormatOpsPass,
        _program.ReplaceViewOpsWithViewCopyOpsPass,
    )
    with _edge_passes.fused_edge_passes():
        assert _program.OpReplacePass is not original[1]
        assert _program.ReplaceViewOpsWithViewCopyOpsPass is not original[3]  # its rule runs fused
    assert (
        _program._get_aten_to_edge_passes,
        _program.OpReplacePass,
        _program.MemoryFormatOpsPass,
        _program.ReplaceViewOpsWithViewCopyOpsPass,
    ) == original

    _program.OpReplacePass = type("OpReplacePass", (), {})  # a later ExecuTorch with another pass
    try:
        with _edge_passes.fused_edge_passes() as fused:
            assert not fused
            assert _program._get_aten_to_edge_passes is original[0]
    finally:
        _program.OpReplacePass = original[1]


def _signature(ep):
    rows = []
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        rows.append((node.name, node.op, str(node.target), str(node.args), str(node.kwargs), str(getattr(val, "shape", val))))
    return rows, sorted(ep.constants), [str(s) for s in ep.graph_signature.input_specs]


def test_fused_edge_program_equals_executorchs(lora_model):
    """The joint training graph in the edge dialect, with and without fusing: the same nodes,
    names, arguments, shapes, constants and signature."""
    from executorch.exir import EdgeCompileConfig
    from executorch.exir.program import _program

    from mobile_peft.export import pte

    model, _ = lora_model
    inputs, _, _ = _io(model, BATCH, 0, with_weights=True)
    joint = pte.joint_graph(pte.capture(TrainingWrapper(model), inputs))
    config = EdgeCompileConfig(_check_ir_validity=False)
    want = _signature(_program._generate_edge_program(config, copy.deepcopy(joint)))
    with _edge_passes.fused_edge_passes():
        got = _signature(_program._generate_edge_program(config, joint))
    assert got == want


def test_frozen_lookups_memoise_within_the_block_and_restore_after():
    """Inside the block a signature's name map is built once (the same object on every read);
    after it, ExecuTorch's and torch's own functions and properties are back."""
    from executorch.backends.xnnpack.partition.config import gemm_configs
    from torch.export.graph_signature import ExportGraphSignature, InputKind, InputSpec, TensorArgument

    from mobile_peft.export import _lookups

    signature = ExportGraphSignature(
        input_specs=[InputSpec(InputKind.PARAMETER, TensorArgument("p_w"), "w")], output_specs=[]
    )
    property_before = ExportGraphSignature.__dict__["inputs_to_parameters"]
    partitions_before = gemm_configs.get_source_partitions
    with _lookups.frozen_lookups():
        first = signature.inputs_to_parameters
        assert first == {"p_w": "w"} and signature.inputs_to_parameters is first
        assert gemm_configs.get_source_partitions is not partitions_before
    assert signature.inputs_to_parameters is not signature.inputs_to_parameters  # rebuilt per read again
    assert ExportGraphSignature.__dict__["inputs_to_parameters"] is property_before
    assert gemm_configs.get_source_partitions is partitions_before


def test_serialisation_answers_delegates_as_running_them_and_restores_after(lora_model):
    """On fake tensors each delegate call returns what running the delegate returns (structure,
    shapes, strides, dtypes), without running it; the replaced names are back after the block."""
    from executorch.exir.passes.spec_prop_pass import SpecPropPass

    from mobile_peft.export import _lookups, pte

    model, _ = lora_model
    inputs, _, _ = _io(model, BATCH, 0, with_weights=True)
    joint = pte.joint_graph(pte.capture(TrainingWrapper(model), inputs))
    edge = pte.lower({"forward": joint})
    top = edge.exported_program("forward")
    spec_prop_before = SpecPropPass.update_placeholder_tensor_specs
    with _lookups.serialisation_lookups(edge):
        assert SpecPropPass.update_placeholder_tensor_specs is not spec_prop_before
    assert SpecPropPass.update_placeholder_tensor_specs is spec_prop_before

    import sys

    from torch._subclasses.fake_tensor import FakeTensorMode

    kernels = sys.modules["torch._higher_order_ops.executorch_call_delegate"]
    run = kernels.call_delegate_cpu
    calls = [n for n in top.graph.nodes if n.op == "call_function" and "call_delegate" in str(n.target)]
    for node in calls:
        lowered = getattr(top.graph_module, node.args[0].target)
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with mode:
            args = [
                torch.empty_strided(a.meta["val"].shape, a.meta["val"].stride(), dtype=a.meta["val"].dtype)
                for a in node.args[1:]
            ]
            ran = run(lowered, *args)
        with _lookups.serialisation_lookups(edge), mode:
            made = kernels.call_delegate_cpu(lowered, *args)
        assert type(made) is type(ran) and len(made) == len(ran)
        for m, r in zip(made, ran, strict=True):
            assert (m.shape, m.stride(), m.dtype, m.device, type(m)) == (r.shape, r.stride(), r.dtype, r.device, type(r))
    assert kernels.call_delegate_cpu is run

    # the dim-order legalisation has ops to look at in this graph, and nothing to legalise
    from executorch.exir.passes import LegalizePortableDimOrderPass

    targets = LegalizePortableDimOrderPass._target_ops
    assert any(node.target in targets for node in top.graph.nodes)
    assert not _edge_passes._legalisation_needed(top.graph_module, targets)


def test_dim_order_pass_runs_where_an_input_is_not_contiguous():
    """An ``expand_copy`` reading a channels-last tensor is what the pass legalises: the check
    says run it; on a contiguous input it says skip; the pass name is restored after the block."""
    import torch
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.program import _program

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    expand = graph.call_function(exir_ops.edge.aten.expand_copy.default, (x, [2, 3, 4, 4]))
    graph.output(expand)
    module = torch.fx.GraphModule(torch.nn.Module(), graph)
    upstream = _program.LegalizePortableDimOrderPass
    targets = upstream._target_ops
    x.meta["val"] = torch.empty(1, 3, 4, 4)
    assert not _edge_passes._legalisation_needed(module, targets)
    x.meta["val"] = torch.empty(1, 3, 4, 4).to(memory_format=torch.channels_last)
    assert _edge_passes._legalisation_needed(module, targets)
    with _edge_passes.idle_dim_order_pass_skipped() as installed:
        assert installed and issubclass(_program.LegalizePortableDimOrderPass, upstream)
    assert _program.LegalizePortableDimOrderPass is upstream
