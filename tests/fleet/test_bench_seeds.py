"""The fleet benchmark over several seeds: each seed is a whole run with its own clients, and the
table carries the mean, the standard error and the paired differences to fedavg."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_peft.core.errors import ConfigError
from mobile_peft.fleet import bench
from mobile_peft.fleet.bench import FleetBenchConfig, markdown_table, run_fleet_seeds

SCORES = {  # seed -> method -> global accuracy
    0: {"rank-aware": 0.30, "fedavg": 0.20},
    1: {"rank-aware": 0.25, "fedavg": 0.24},
    2: {"rank-aware": 0.40, "fedavg": 0.31},
}


def _fake_run(config, bundle=None, verbose=False, on_round=None):  # noqa: ANN001, ANN202
    assert config.partition.seed == config.seed  # a seed draws its own clients, not only its own samples
    rows = [{"method": m, "ranks": "r", "global_accuracy": SCORES[config.seed][m], "personalised_accuracy": 0.5,
             "local_only_accuracy": 0.1, "bytes_per_round": 100.0, "rounds_lost": 0, "rejected": 1, "failed": 0,
             "wall_seconds": 2.0, "rounds": [{"round": 1}]} for m in config.methods]
    return {"config": {"seed": config.seed, "clients": 4, "fraction": 0.5, "rounds": 1, "local_steps": 1, "heldout": 2,
                       "personal_steps": 1}, "registered_clients": 4, "simulation_seconds": 1.0, "rows": rows}


def test_means_standard_errors_and_paired_differences(monkeypatch):
    monkeypatch.setattr(bench, "run_fleet_bench", _fake_run)
    config = FleetBenchConfig(methods=("rank-aware", "fedavg"))
    results = run_fleet_seeds(config, (0, 1, 2))
    ours = results["rows"][0]
    assert ours["global_accuracy"] == pytest.approx(np.mean([0.30, 0.25, 0.40]))
    assert ours["global_accuracy_se"] == pytest.approx(np.std([0.30, 0.25, 0.40], ddof=1) / np.sqrt(3))
    assert ours["rejected"] == 3 and [s["seed"] for s in ours["per_seed"]] == [0, 1, 2]
    (paired,) = results["paired"]
    diffs = [0.10, 0.01, 0.09]
    assert paired["method"] == "rank-aware" and paired["global_accuracy_diffs"] == pytest.approx(diffs)
    assert paired["global_accuracy_diff"] == pytest.approx(np.mean(diffs))
    assert paired["global_accuracy_diff_se"] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(3))
    table = markdown_table(results, "cmd")
    assert "31.7 % ± 4.4" in table and "+6.7 ± 2.8" in table and "seeds 0, 1, 2" in table


def test_one_seed_has_no_standard_error_and_no_seeds_is_refused(monkeypatch):
    monkeypatch.setattr(bench, "run_fleet_bench", _fake_run)
    results = run_fleet_seeds(FleetBenchConfig(methods=("rank-aware",)), (1,))
    assert results["rows"][0]["global_accuracy_se"] is None and results["paired"] == []
    assert "±" not in markdown_table(results, "cmd")
    with pytest.raises(ConfigError, match="at least one"):
        run_fleet_seeds(FleetBenchConfig(), ())
