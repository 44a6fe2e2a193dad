"""The linear-time XNNPACK grouping: every group convex, and the groups acyclic among themselves
(checked by brute force on random DAGs and on a real joint graph)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import fx

pytest.importorskip("executorch")

from mobile_peft.export._partition import convex_groups  # noqa: E402


def _random_dag(n: int, seed: int) -> tuple[fx.Graph, set[fx.Node]]:
    rng = random.Random(seed)
    graph = fx.Graph()
    nodes = [graph.placeholder("x")]
    for i in range(n):
        k = rng.randint(1, min(3, len(nodes)))
        nodes.append(
            graph.call_function(
                torch.add, tuple(rng.sample(nodes[-6:] if rng.random() < 0.7 else nodes, k)), name=f"n{i}"
            )
        )
    graph.output(nodes[-1])
    supported = {v for v in nodes[1:] if rng.random() < 0.5}
    return graph, supported


def _reach(graph: fx.Graph) -> dict[fx.Node, set[fx.Node]]:
    """Transitive successors of every node (brute force)."""
    down: dict[fx.Node, set[fx.Node]] = {}
    for node in reversed(list(graph.nodes)):
        down[node] = set()
        for user in node.users:
            down[node] |= {user} | down[user]
    return down


def _check(graph: fx.Graph, supported: set[fx.Node], groups: list[list[fx.Node]]) -> None:
    placed = [n for g in groups for n in g]
    assert sorted(placed, key=str) == sorted(supported, key=str) and len(placed) == len(set(placed))
    down = _reach(graph)
    group_of = {n: i for i, g in enumerate(groups) for n in g}
    for i, group in enumerate(groups):
        members = set(group)
        # convex: nothing outside the group lies on a path between two of its members
        outside_between = {w for a in members for w in down[a] if w not in members and down[w] & members}
        assert not outside_between, f"group {i} is not convex"
    # acyclic quotient: an edge between groups always runs from a lower index to a higher one
    for node in graph.nodes:
        for user in node.users:
            if node in group_of and user in group_of and group_of[node] != group_of[user]:
                assert group_of[node] < group_of[user]
    for a in supported:
        for b in down[a] & supported:
            assert group_of[a] <= group_of[b], "a path from a later group back into an earlier one"


@pytest.mark.parametrize("seed", range(40))
def test_random_dags(seed):
    graph, supported = _random_dag(60, seed)
    groups = convex_groups(graph, supported)
    _check(graph, supported, groups)


def test_merges_independent_neighbours():
    graph = fx.Graph()
    x = graph.placeholder("x")
    q, k, v = (graph.call_function(torch.mm, (x, x), name=n) for n in "qkv")
    s = graph.call_function(torch.softmax, (q, -1))
    o = graph.call_function(torch.mm, (s, k), name="o")
    graph.output((o, v))
    groups = convex_groups(graph, {q, k, v, o})
    assert [set(g) for g in groups] == [{q, k, v}, {o}]  # o depends on q through softmax


def test_a_far_reader_opens_its_own_partition(monkeypatch):
    """A backward-like op reading a forward value far behind it does not join that value's
    partition (fusing would compute it in the forward and keep it alive across the step)."""
    from mobile_peft.export import _partition

    def groups() -> list[set[fx.Node]]:
        graph = fx.Graph()
        x = graph.placeholder("x")
        early = graph.call_function(torch.mm, (x, x), name="early")
        near = graph.call_function(torch.mm, (early, x), name="near")
        value = x
        for i in range(100):  # unrelated unsupported work in between
            value = graph.call_function(torch.relu, (value,), name=f"work{i}")
        far = graph.call_function(torch.mm, (early, value), name="far")
        graph.output((near, far))
        return [{n.name for n in g} for g in convex_groups(graph, {early, near, far})]

    assert _partition._MAX_GAP < 100
    assert groups() == [{"early", "near"}, {"far"}]
    monkeypatch.setattr(_partition, "_MAX_GAP", 10**9)
    assert groups() == [{"early", "near", "far"}]  # convex, so only the gap keeps it out


def test_tanh_gelu_is_not_delegated():
    """XNNPACK's GELU is the exact one; ExecuTorch's visitor drops ``approximate``. The exact GELU
    goes to XNNPACK, the tanh one (SigLIP's) stays in ExecuTorch's kernel, and both lowered
    programs give eager PyTorch's values."""
    from mobile_peft.export import pte

    class Gelu(torch.nn.Module):
        def __init__(self, approximate: str) -> None:
            super().__init__()
            self.approximate = approximate

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.gelu(x * 2.0, approximate=self.approximate)

    x = torch.linspace(-4, 4, 64).reshape(8, 8)
    for approximate, delegated in (("none", True), ("tanh", False)):
        module = Gelu(approximate)
        edge = pte.lower({"forward": pte.capture(module, (x,))}, xnnpack_ops=("GeluConfig",))
        graph = edge.exported_program("forward").graph
        kernels = [str(n.target) for n in graph.nodes if n.op == "call_function"]
        assert any("gelu" in k for k in kernels) is not delegated, kernels
        program = edge.to_executorch()
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(program.buffer).load_method("forward")
        torch.testing.assert_close(method.execute([x])[0], module(x), rtol=1e-5, atol=1e-6)


def test_unknown_partitioner_config_is_refused():
    from mobile_peft.core.errors import ConfigError
    from mobile_peft.export._partition import partitioner_configs

    with pytest.raises(ConfigError, match=r"GluConfig.*SoftmaxConfig"):
        partitioner_configs(("GluConfig",))
    assert sorted(c.__name__ for c in partitioner_configs(("GeluConfig", "MMConfig"))) == ["ExactGeluConfig", "MMConfig"]


def test_large_values_made_between_members_are_not_held_together(monkeypatch):
    """Independent matmuls whose weights are computed outside the partition between them (a
    row-blocked layer's dequantised blocks) get a delegate each once those weights are large:
    one delegate would keep every block alive until it runs. Small ones (q/k/v) still share."""
    from mobile_peft.export import _partition

    def groups(rows: int) -> list[set[str]]:
        graph = fx.Graph()
        x = graph.placeholder("x")
        x.meta["val"] = torch.empty(4, 64, device="meta")
        q = graph.placeholder("q")
        mms = []
        for i in range(3):
            w = graph.call_function(torch.mul, (q, 2.0), name=f"w{i}")  # not supported: outside
            w.meta["val"] = torch.empty(rows, 64, device="meta")
            mm = graph.call_function(torch.mm, (x, w), name=f"mm{i}")
            mm.meta["val"] = torch.empty(4, rows, device="meta")
            mms.append(mm)
        graph.output(tuple(mms))
        return [{n.name for n in g} for g in convex_groups(graph, set(mms))]

    small = _partition._MAX_HELD // (64 * 4 * 4)  # three weights fit together
    assert groups(small) == [{"mm0", "mm1", "mm2"}]
    big = _partition._MAX_HELD // (64 * 4) + 1  # one weight alone exceeds the limit
    assert groups(big) == [{"mm0"}, {"mm1"}, {"mm2"}]
    monkeypatch.setattr(_partition, "_MAX_HELD", 10**12)
    assert groups(big) == [{"mm0", "mm1", "mm2"}]  # convex, so only the limit keeps them apart
