"""RankSchedule JSON: round trip (with a performance model) and clear errors on bad input."""

from __future__ import annotations

import json

import pytest

from mobile_peft.allocators import RankSchedule, budget_from_rank, get_allocator
from mobile_peft.core.errors import ConfigError


@pytest.fixture
def schedule(adapted):
    model = adapted("hydra", 8)
    s = get_allocator("uniform").plan(model, None, None, budget_from_rank(model, 2))
    s.performance_model = {"feature_names": ["a"], "weights": [0.5], "intercept": 1.0}
    return s, model


def test_round_trip(schedule, tmp_path):
    s, model = schedule
    path = s.save(tmp_path / "schedule.json")
    loaded = RankSchedule.load(path, model)
    assert loaded.to_dict() == s.to_dict()
    assert json.loads(path.read_text())["performance_model"]["weights"] == [0.5]


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: d["phases"][0]["ranks"].update({"nope.q_proj": {"parallel": 1}}), "unknown modules"),
        (lambda d: next(iter(d["phases"][0]["ranks"].values())).update({"parallel": 99}), "outside 0..r_max"),
        (lambda d: d.update(budget_params=d["budget_params"] // 2), "over the budget"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.pop("phases"), "missing key 'phases'"),
    ],
)
def test_rejects_bad_input(schedule, tmp_path, break_it, message):
    d = schedule[0].to_dict()
    break_it(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=message):
        RankSchedule.load(path)


def test_rejects_other_model(schedule, adapted, tmp_path):
    s, _ = schedule
    path = s.save(tmp_path / "s.json")
    with pytest.raises(ConfigError, match="r_max"):
        RankSchedule.load(path, adapted("hydra", 4))
