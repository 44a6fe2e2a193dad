"""The server's spectral rank schedule: what it measures, and how it spends a phone's budget."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_peft.core.errors import ConfigError
from mobile_peft.fleet.schedule import SpectralSchedule, round_change_spectra
from mobile_peft.fleet.server import FleetServer, ServerConfig
from mobile_peft.fleet.updates import Update

from .conftest import random_params

Q, V = ("m.q", "lora"), ("m.v", "lora")  # r_max 4 (6 -> 5) and 3 (4 -> 3): 11 and 7 parameters per rank


def _ranks(q, v):  # noqa: ANN001, ANN202
    return {"m.q": {"lora": q}, "m.v": {"lora": v}}


def _params(layout, q_change: float, v_change: float, seed: int = 0):  # noqa: ANN001, ANN202
    """A before/after pair whose slots change by about the given sizes."""
    before = random_params(layout, seed)
    step = random_params(layout, seed + 1)
    after = dict(before)
    for key, size in ((Q, q_change), (V, v_change)):
        down, up = layout.names(key)
        after[up] = before[up] + size * step[up]
    return before, after


def test_spectra_are_the_round_changes_singular_values(layout):
    before, after = _params(layout, 1.0, 0.1)
    spectra = round_change_spectra(layout, before, after)
    for key in (Q, V):
        down, up = layout.names(key)
        a, b = ({k: v.astype(np.float64) for k, v in d.items()} for d in (after, before))
        dense = a[up] @ a[down] - b[up] @ b[down]
        expected = np.linalg.svd(dense, compute_uv=False)[: layout.r_max(key)] ** 2
        np.testing.assert_allclose(spectra[key][: expected.size], expected, rtol=1e-6, atol=1e-10)


def test_ranks_follow_the_change_within_the_declared_budget(layout):
    schedule = SpectralSchedule(layout)
    declared = _ranks(1, 3)  # 1 * 11 + 3 * 7 = 32 parameters
    assert schedule.ranks(declared) == declared  # nothing seen yet
    schedule.observe(*_params(layout, 1.0, 0.01))
    moved = schedule.ranks(declared)
    assert moved == _ranks(2, 1)  # rank goes where the fleet moved: 22 + 7 = 29 <= 32 (q 3 would cost 40)
    schedule = SpectralSchedule(layout, decay=0.0)
    declared = _ranks(3, 1)  # 40 parameters
    schedule.observe(*_params(layout, 0.01, 1.0))
    assert schedule.ranks(declared) == _ranks(1, 3)  # v at its r_max (32), q kept at rank 1


def test_a_phone_below_rank_one_everywhere_keeps_its_ranks(layout):
    schedule = SpectralSchedule(layout)
    schedule.observe(*_params(layout, 1.0, 1.0))
    assert schedule.ranks(_ranks(1, 0)) == _ranks(1, 0)


def test_the_server_reschedules_every_client_after_a_round(layout):
    server = FleetServer(layout, random_params(layout, 3), ServerConfig(rule="rank-aware", schedule="spectral", min_clients=1,
                                                                       fraction=1.0))
    server.register("a", _ranks(1, 3))
    server.register("b", _ranks(4, 3))
    rng = np.random.default_rng(0)
    updates = []
    for name in server.sample(1):
        sliced, ranks = server.instructions(name)
        trained = {k: v + (1.0 if k.startswith("m.q") else 0.001) * rng.normal(size=v.shape).astype(np.float32)
                   for k, v in sliced.items()}
        updates.append(Update(name, trained, ranks, 10))
    server.finish_round(1, ["a", "b"], updates, [], 0, 0)
    assert server.declared["a"] == _ranks(1, 3) and server.clients["a"] == _ranks(2, 1)
    assert server.clients["b"] == _ranks(4, 3)  # a full budget buys every rank either way


def test_a_uniform_rule_cannot_follow_a_schedule():
    with pytest.raises(ConfigError, match="uniform"):
        ServerConfig(rule="fedavg", uniform_rank=2, schedule="spectral")
    with pytest.raises(ConfigError, match="expected one of"):
        ServerConfig(schedule="sometimes")
