"""Aggregation rules on hand-made updates: what each averages, and over whom."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_peft.core.errors import ConfigError
from mobile_peft.fleet.rules import get_rule, refactor
from mobile_peft.fleet.updates import Update

from .conftest import random_params

RNG = np.random.default_rng(0)


def _update(layout, name, params, ranks, n):  # noqa: ANN001, ANN202
    return Update(name, layout.slice_params(params, ranks), ranks, n)


def _ranks(q, v):  # noqa: ANN001, ANN202
    return {"m.q": {"lora": q}, "m.v": {"lora": v}}


def test_rank_aware_averages_each_column_over_its_holders_only(layout):
    glob, p1, p2 = (random_params(layout, s) for s in (0, 1, 2))
    u1, u2 = _update(layout, "a", p1, _ranks(1, 3), 1), _update(layout, "b", p2, _ranks(3, 1), 3)
    rule = get_rule("rank-aware-norebase")
    out = rule.aggregate(layout, glob, [u1, u2], RNG)
    # column 0 of q: both clients (weights 1/4, 3/4); columns 1-2: only b; column 3: nobody -> global.
    np.testing.assert_allclose(out["m.q.A"][0], 0.25 * p1["m.q.A"][0] + 0.75 * p2["m.q.A"][0], rtol=1e-6)
    np.testing.assert_allclose(out["m.q.A"][1:3], p2["m.q.A"][1:3])
    np.testing.assert_allclose(out["m.q.B"][:, 1:3], p2["m.q.B"][:, 1:3])
    np.testing.assert_array_equal(out["m.q.A"][3], glob["m.q.A"][3])
    np.testing.assert_allclose(out["m.v.B"][:, 1:], p1["m.v.B"][:, 1:])


def test_hetlora_dilutes_high_rank_columns_with_zeros(layout):
    glob, p1, p2 = (random_params(layout, s) for s in (0, 1, 2))
    u1, u2 = _update(layout, "a", p1, _ranks(1, 3), 1), _update(layout, "b", p2, _ranks(3, 3), 1)
    out = get_rule("hetlora").aggregate(layout, glob, [u1, u2], RNG)
    np.testing.assert_allclose(out["m.q.A"][1:3], 0.5 * p2["m.q.A"][1:3], rtol=1e-6)  # halved by a's zeros
    np.testing.assert_array_equal(out["m.q.A"][3], glob["m.q.A"][3])  # nobody trained it


def test_fedavg_is_the_weighted_mean_and_refuses_mixed_ranks(layout):
    glob, p1, p2 = (random_params(layout, s) for s in (0, 1, 2))
    same = [_update(layout, "a", p1, _ranks(2, 2), 1), _update(layout, "b", p2, _ranks(2, 2), 1)]
    out = get_rule("fedavg").aggregate(layout, glob, same, RNG)
    np.testing.assert_allclose(out["m.q.B"][:, :2], 0.5 * (p1["m.q.B"][:, :2] + p2["m.q.B"][:, :2]), rtol=1e-6)
    np.testing.assert_array_equal(out["m.q.B"][:, 2:], glob["m.q.B"][:, 2:])
    # equal ranks: rank-aware's column averaging is FedAvg
    ours = get_rule("rank-aware-norebase").aggregate(layout, glob, same, RNG)
    np.testing.assert_allclose(ours["m.q.B"], out["m.q.B"])
    with pytest.raises(ConfigError, match="equal-rank"):
        get_rule("fedavg").aggregate(layout, glob, [same[0], _update(layout, "c", p2, _ranks(3, 2), 1)], RNG)


def test_flexlora_averages_products(layout):
    glob, p1, p2 = (random_params(layout, s) for s in (0, 1, 2))
    u1, u2 = _update(layout, "a", p1, _ranks(1, 1), 1), _update(layout, "b", p2, _ranks(2, 1), 1)
    out = get_rule("flexlora").aggregate(layout, glob, [u1, u2], RNG)
    expected = 0.5 * (p1["m.q.B"][:, :1] @ p1["m.q.A"][:1]) + 0.5 * (p2["m.q.B"][:, :2] @ p2["m.q.A"][:2])
    np.testing.assert_allclose(out["m.q.B"] @ out["m.q.A"], expected, atol=1e-5)  # total rank 3 <= r_max 4: exact
    # the null component (rank 4 > 3) got a fresh down row and a zero up column
    assert np.abs(out["m.q.A"][3]).sum() > 0 and not out["m.q.B"][:, 3].any()


def test_rank_aware_rebase_keeps_the_product_and_orders_by_energy(layout):
    glob, p1, p2 = (random_params(layout, s) for s in (0, 1, 2))
    ups = [_update(layout, "a", p1, _ranks(4, 3), 2), _update(layout, "b", p2, _ranks(2, 3), 1)]
    plain = get_rule("rank-aware-norebase").aggregate(layout, glob, ups, RNG)
    based = get_rule("rank-aware").aggregate(layout, glob, ups, RNG)
    for m in ("m.q", "m.v"):
        np.testing.assert_allclose(based[f"{m}.B"] @ based[f"{m}.A"], plain[f"{m}.B"] @ plain[f"{m}.A"], atol=1e-4)
    energy = [np.linalg.norm(based["m.q.B"][:, j]) * np.linalg.norm(based["m.q.A"][j]) for j in range(4)]
    assert energy == sorted(energy, reverse=True)


def test_refactor_revives_an_all_zero_slot():
    down, up = np.zeros((3, 4), np.float32), np.zeros((5, 3), np.float32)
    new_down, new_up = refactor(down, up, np.random.default_rng(0))
    assert not new_up.any() and np.abs(new_down).min() > 0  # trainable again: fresh A, zero B (LoRA's init)


def test_unknown_rule_names_the_choices():
    with pytest.raises(ConfigError, match="rank-aware"):
        get_rule("fedsgd")
