"""Screening refuses malformed and hostile updates, keeps the good ones."""

from __future__ import annotations

import numpy as np

from mobile_peft.fleet.robust import ScreenConfig, screen_updates
from mobile_peft.fleet.updates import Update

from .conftest import random_params

RANKS = {"m.q": {"lora": 2}, "m.v": {"lora": 1}}


def _good(layout, glob, i):  # noqa: ANN001, ANN202
    rng = np.random.default_rng(100 + i)
    sliced = layout.slice_params(glob, RANKS)
    return Update(str(i), {k: v + 0.01 * rng.normal(size=v.shape).astype(np.float32) for k, v in sliced.items()}, RANKS, 10)


def test_each_kind_of_bad_update_is_refused_with_its_reason(layout):
    glob = random_params(layout, 0)
    good = [_good(layout, glob, i) for i in range(5)]
    nan = _good(layout, glob, 10)
    nan.tensors["m.q.A"][0, 0] = np.nan
    shape = _good(layout, glob, 11)
    shape.tensors["m.q.B"] = shape.tensors["m.q.B"][:, :1]
    rank = _good(layout, glob, 12)
    rank.ranks = {"m.q": {"lora": 9}, "m.v": {"lora": 1}}
    unknown = _good(layout, glob, 13)
    unknown.ranks = {**RANKS, "m.x": {"lora": 1}}
    weight = _good(layout, glob, 14)
    weight.examples = 10**9
    huge = _good(layout, glob, 15)
    huge.tensors = {k: v * 50 for k, v in huge.tensors.items()}
    boolean = _good(layout, glob, 16)
    boolean.ranks = {"m.q": {"lora": True}, "m.v": {"lora": 1}}
    accepted, rejected = screen_updates(layout, glob, [*good, nan, shape, rank, unknown, weight, huge, boolean])
    assert [u.client for u in accepted] == [u.client for u in good]
    reasons = {r.client: r.reason for r in rejected}
    assert "non-finite" in reasons["10"]
    assert "shape" in reasons["11"]
    assert "outside 0..r_max=4" in reasons["12"]
    assert "does not have" in reasons["13"]
    assert "example count" in reasons["14"]
    assert "MADs above" in reasons["15"]
    assert "outside" in reasons["16"]


def test_norm_rule_needs_enough_updates_and_tolerates_normal_spread(layout):
    glob = random_params(layout, 0)
    two = [_good(layout, glob, 0), _good(layout, glob, 1)]
    two[1].tensors = {k: v * 3 for k, v in two[1].tensors.items()}
    accepted, rejected = screen_updates(layout, glob, two, ScreenConfig(min_for_norm=3))
    assert len(accepted) == 2 and not rejected
    many = [_good(layout, glob, i) for i in range(8)]
    accepted, rejected = screen_updates(layout, glob, many)
    assert len(accepted) == 8 and not rejected


def test_uniform_rule_requires_the_ranks_it_sent(layout):
    glob = random_params(layout, 0)
    u = _good(layout, glob, 0)
    accepted, rejected = screen_updates(layout, glob, [u], required_ranks={"0": {"m.q": {"lora": 3}, "m.v": {"lora": 1}}})
    assert not accepted and "differs" in rejected[0].reason
