"""``mobile-peft plan`` on a tiny model directory built in tmp_path."""

from __future__ import annotations

import pytest

from mobile_peft.allocators import RankSchedule
from mobile_peft.cli import main
from mobile_peft.models import save_model


@pytest.fixture
def model_dir(tiny, tmp_path):
    model, tokenizer = tiny
    return save_model(model, tokenizer, tmp_path / "tiny")


@pytest.mark.parametrize("allocator", ["uniform"])
def test_plan_cli_writes_a_valid_schedule(model_dir, tmp_path, allocator, capsys):
    out = tmp_path / f"{allocator}.json"
    args = ["plan", str(model_dir), "--allocator", allocator, "--budget-rank", "2", "--data", "digits:parity", "--train-limit", "32", "--out", str(out)]
    assert main(args) == 0
    schedule = RankSchedule.load(out)
    assert schedule.allocator == allocator and schedule.budget_params > 0
    printed = capsys.readouterr().out
    assert f"{allocator} ranks" in printed and "wrote" in printed  # the layers x module types table


def test_plan_cli_hydra_rank_with_plot(model_dir, tmp_path, monkeypatch):
    from mobile_peft.allocators.hydra_rank import config as hydra_config

    # keep the smoke fast: fewer, shorter probes than the defaults
    monkeypatch.setattr(hydra_config.HydraRankConfig, "__init__", _fast_init(hydra_config.HydraRankConfig.__init__))
    out = tmp_path / "hydra.json"
    args = ["plan", str(model_dir), "--allocator", "hydra-rank", "--budget-params", "20000", "--data", "digits:parity", "--train-limit", "48", "--out", str(out), "--plot"]
    assert main(args) == 0
    schedule = RankSchedule.load(out)
    assert schedule.performance_model is not None
    assert out.with_suffix(".png").stat().st_size > 1000


def test_plan_cli_rejects_a_budget_it_cannot_hold(model_dir, tmp_path):
    args = ["plan", str(model_dir), "--allocator", "uniform", "--budget-params", "10", "--out", str(tmp_path / "x.json")]
    assert main(args) == 2


def _fast_init(original):
    def init(self, **kwargs):
        kwargs = {"warmup_steps": 2, "probes": 3, "probe_steps": 1, "probe_val": 16, "probe_batch_size": 8, **kwargs}
        original(self, **kwargs)

    return init
