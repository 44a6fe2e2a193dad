"""In-place legalisation and deferred code generation give the same graphs and programs as
ExecuTorch's own delegate fusion (export/_fuse.py)."""

from __future__ import annotations

import contextlib
import hashlib
import operator
import random

import pytest
import torch
from torch.fx import Graph, GraphModule
from torch.fx.passes.tools_common import legalize_graph

from mobile_peft.export import _fuse
from mobile_peft.export.formats import _io
from mobile_peft.export.wrappers import TrainingWrapper

from .conftest import BATCH


def scrambled_dag(seed: int, size: int = 40) -> GraphModule:
    """A random DAG of adds/muls with several readers per value (some ``operator.add``, which
    legalisation queues first), then nodes moved out of order (what fusing a delegate does)."""
    rng = random.Random(seed)
    graph = Graph()
    values = [graph.placeholder(f"x{i}") for i in range(3)]
    for _ in range(size):
        a, b = rng.sample(values, 2)
        values.append(graph.call_function(rng.choice([torch.add, torch.mul, operator.add]), (a, b)))
    graph.output(tuple(values[-3:]))
    body = [n for n in graph.nodes if n.op == "call_function"]
    for node in rng.sample(body, size // 3):
        rng.choice(body).prepend(node)  # may put a node before its own inputs
    return GraphModule(torch.nn.Module(), graph)


@pytest.mark.parametrize("seed", range(20))
def test_legalize_in_place_matches_torch(seed):
    expected, actual = scrambled_dag(seed), scrambled_dag(seed)
    legalize_graph(expected)
    _fuse.legalize_in_place(actual)

    def layout(gm):
        return [(n.name, [u.name for u in n.users]) for n in gm.graph.nodes]

    assert layout(actual) == layout(expected)
    actual.graph.lint()
    inputs = [torch.randn(3) for _ in range(3)]
    for got, want in zip(actual(*inputs), expected(*inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(20))
def test_stable_legalize_is_a_valid_order_closest_to_the_graphs(seed):
    """Stable: every node after its inputs, the same values; a graph already in a valid order keeps
    it exactly; each node is placed as early as the graph had it, given its inputs."""
    reference, actual = scrambled_dag(seed), scrambled_dag(seed)
    before = [n.name for n in actual.graph.nodes]
    _fuse.legalize_in_place(actual, stable=True)
    actual.graph.lint()  # raises when a node comes before one of its inputs
    order = [n.name for n in actual.graph.nodes]
    assert sorted(order) == sorted(before)
    inputs = [torch.randn(3) for _ in range(3)]
    legalize_graph(reference)
    for got, want in zip(actual(*inputs), reference(*inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    again = list(order)
    _fuse.legalize_in_place(actual, stable=True)
    assert [n.name for n in actual.graph.nodes] == again
    # the greedy rule: of the nodes whose inputs are placed, the one the graph had first
    position = {name: i for i, name in enumerate(before)}
    placed: set[str] = set()
    nodes = {n.name: n for n in actual.graph.nodes}
    for name in order:
        ready = [m for m in before if m not in placed and all(i.name in placed for i in nodes[m].all_input_nodes)]
        assert position[name] == min(position[m] for m in ready)
        placed.add(name)


def test_cycle_is_reported():
    gm = scrambled_dag(0)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    first, last = nodes[0], nodes[-1]
    first.args = (last, first.args[1])
    with pytest.raises(RuntimeError, match="cycles"):
        _fuse.legalize_in_place(gm)


def test_deferred_module_generates_source_on_use_only():
    plain = scrambled_dag(1)
    legalize_graph(plain)
    deferred = _fuse.DeferredCodeGraphModule(plain, plain.graph)
    deferred.recompile()
    assert "source generated on use" in str(deferred)
    assert type(deferred)._needs_recompile()  # str() did not generate it
    inputs = [torch.randn(3) for _ in range(3)]
    for got, want in zip(deferred(*inputs), plain(*inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_fast_fusion_swaps_only_torchs_function_and_restores_it():
    pytest.importorskip("executorch")
    from executorch.exir import lowered_backend_module as fusion
    from executorch.exir.backend import backend_api

    names = ("_get_node_list_with_same_tag", "_maybe_duplicate_constant_nodes", "_insert_lowered_submodule", "_create_partitions")
    upstream = [getattr(backend_api, name) for name in names] + [fusion.insert_subgm, fusion.fuse_as_graphmodule]
    original = fusion.legalize_graph
    with _fuse.fast_fusion() as swapped:
        assert swapped and fusion.legalize_graph is _fuse.legalize_in_place
        assert all(getattr(backend_api, name) is not function for name, function in zip(names, upstream))
    with _fuse.fast_fusion(stable=True):
        assert fusion.fuse_as_graphmodule is not upstream[-1]
    assert fusion.legalize_graph is original
    assert [getattr(backend_api, name) for name in names] + [fusion.insert_subgm, fusion.fuse_as_graphmodule] == upstream
    fusion.legalize_graph = lambda gm: gm  # a later ExecuTorch with its own function
    try:
        with _fuse.fast_fusion() as swapped:
            assert not swapped
    finally:
        fusion.legalize_graph = original


def test_fast_fusion_writes_the_same_program(lora_model, tmp_path, monkeypatch):
    """The joint training graph traced, lowered and serialised with and without the fast paths (in
    ExecuTorch's own node order, ``keep_order=False``; the fast one traced without stack traces):
    identical .pte bytes. The skipped
    functionalisation retrace changes the delegates' debug handles, so it has its own test
    (``test_retrace.py``)."""
    pytest.importorskip("executorch")
    from mobile_peft.export import _retrace, pte

    monkeypatch.setattr(_retrace, "skip_functional_retrace", contextlib.nullcontext)

    model, _ = lora_model
    inputs, _, _ = _io(model, BATCH, 0, with_weights=True)
    digests = {}
    for fast in (True, False):
        with pte.no_stack_traces() if fast else contextlib.nullcontext():
            joint = pte.joint_graph(pte.capture(TrainingWrapper(model), inputs))
            edge = pte.lower({"forward": joint}, fast=fast, keep_order=False)
            program, data = pte.serialise(edge, tmp_path / str(fast), fast=fast)
        traced = any("stack_trace" in node.meta for node in joint.graph.nodes)
        assert traced is not fast
        digests[fast] = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (program, data)]
    assert digests[True] == digests[False]


def _lower_joint(lora_model):
    """The tiny LoRA model's joint training graph lowered as exports lower it (``keep_order``)."""
    from mobile_peft.export import pte

    model, _ = lora_model
    inputs, _, _ = _io(model, BATCH, 0, with_weights=True)
    joint = pte.joint_graph(pte.capture(TrainingWrapper(model), inputs))
    return pte.lower({"forward": joint}, keep_order=True)


def test_windowed_legalisation_gives_the_whole_graph_order(lora_model, monkeypatch):
    """Each fusion while lowering the joint graph (``keep_order``): re-sorting only the window it
    disordered leaves the nodes, and every users dict, exactly as the whole-graph stable
    legalisation would; most fusions take that path."""
    pytest.importorskip("executorch")
    checked = []
    windowed = _fuse._legalize_window

    def checking(start, end):
        graph = start.graph
        expected = _fuse.topological_order(graph, stable=True)
        done = windowed(start, end)
        if done:
            assert list(graph.nodes) == expected
            position = {node: i for i, node in enumerate(expected)}
            for node in expected:
                readers = [position[user] for user in node.users]
                assert readers == sorted(readers), node
            checked.append(len(expected))
        return done

    monkeypatch.setattr(_fuse, "_legalize_window", checking)
    delegates = sum(
        1
        for node in _lower_joint(lora_model).exported_program("forward").graph.nodes
        if node.op == "call_function" and "call_delegate" in str(node.target)
    )
    assert delegates > 2 and len(checked) >= delegates - 1


def test_window_that_is_not_closed_is_left_to_the_whole_graph():
    """A span with a node that reads a node after it is not re-sorted alone (graph untouched)."""
    gm = scrambled_dag(3)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    before = [n.name for n in gm.graph.nodes]
    assert not _fuse._legalize_window(nodes[0]._prev, nodes[len(nodes) // 2])
    assert [n.name for n in gm.graph.nodes] == before


def test_tag_index_gives_executorch_s_node_lists(lora_model, monkeypatch):
    """Every delegate tag's node list while lowering the joint graph: the same nodes in the same
    order as ExecuTorch's whole-graph scan, answered from the index."""
    pytest.importorskip("executorch")
    from executorch.exir.backend import backend_api

    scan = backend_api._get_node_list_with_same_tag
    indexed = _fuse._TagIndex.get_node_list_with_same_tag
    answered = []

    def checking(self, gm, tag, program):
        got = indexed(self, gm, tag, program)
        assert got == scan(gm, tag, program)
        answered.append(tag)
        return got

    monkeypatch.setattr(_fuse._TagIndex, "get_node_list_with_same_tag", checking)
    _lower_joint(lora_model)
    assert len(answered) > 2 and len(set(answered)) == len(answered)
    assert backend_api._get_node_list_with_same_tag is scan


def test_delegate_debug_handles_are_executorch_s(lora_model, monkeypatch):
    """Each delegate call's debug handle while lowering the joint graph: one more than the largest
    handle in the graph, as ExecuTorch's walk finds it, though the graph is walked once."""
    pytest.importorskip("executorch")
    from executorch.exir.backend import backend_api

    upstream = backend_api._insert_lowered_submodule
    carried = _fuse._DebugHandles.next_handle
    walks = []
    handles = []

    def checking(self, graph):
        walks.append(id(graph) not in self.largest)
        handle = carried(self, graph)
        assert handle == 1 + max(0, *(node.meta.get("debug_handle", 0) for node in graph.nodes))
        handles.append(handle)
        return handle

    monkeypatch.setattr(_fuse._DebugHandles, "next_handle", checking)
    _lower_joint(lora_model)
    assert len(handles) > 2 and sum(walks) == 1
    assert handles == list(range(handles[0], handles[0] + len(handles)))
    assert backend_api._insert_lowered_submodule is upstream


def test_signature_maps_are_rebuilt_after_a_rename_only():
    pytest.importorskip("executorch")
    from torch.export.graph_signature import (
        ExportGraphSignature,
        InputKind,
        InputSpec,
        OutputKind,
        OutputSpec,
        TensorArgument,
    )

    signature = ExportGraphSignature(
        input_specs=[InputSpec(InputKind.PARAMETER, TensorArgument("p_w"), "w")],
        output_specs=[OutputSpec(OutputKind.USER_OUTPUT, TensorArgument("mm"), None)],
    )
    before = ExportGraphSignature.__dict__["inputs_to_parameters"], ExportGraphSignature.replace_all_uses
    with _fuse._signature_maps_between_renames():
        first = signature.inputs_to_parameters
        assert first == {"p_w": "w"} and signature.inputs_to_parameters is first
        signature.replace_all_uses("mm", "getitem")  # an output: the maps stand
        assert signature.inputs_to_parameters is first and signature.output_specs[0].arg.name == "getitem"
        signature.replace_all_uses("p_w", "p_w_1")
        assert signature.inputs_to_parameters == {"p_w_1": "w"}
        signature.input_specs.append(InputSpec(InputKind.PARAMETER, TensorArgument("p_v"), "v"))
        assert signature.inputs_to_parameters == {"p_w_1": "w", "p_v": "v"}
    assert (ExportGraphSignature.__dict__["inputs_to_parameters"], ExportGraphSignature.replace_all_uses) == before
