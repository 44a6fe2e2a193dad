"""The performance-model benchmark's smoke run: the same code path in seconds, well-formed results."""

import json
import math

import pytest

from mobile_peft.cli import main


def test_smoke_run_writes_well_formed_results(tmp_path):
    assert main(["bench", "perf-model", "--smoke", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    results = json.loads((tmp_path / "perf_model-smoke.json").read_text())
    (row,) = results["rows"]
    assert row["configs"] == 7
    assert set(row["spearman_test"]) == {"logrank", "spectral", "logrank_prior", "spectral_prior", "logrank_shrink"}
    for value in row["spearman_test"].values():
        assert math.isnan(value) or -1.0 <= value <= 1.0
    assert set(row["allocation_val_loss"]) == {"uniform", "logrank", "spectral"}
    assert all(math.isfinite(v) for v in row["allocation_val_loss"].values())
    probes = row["probes"]  # the raw runs another model can be scored on
    assert len(probes["ranks"]) == len(probes["val_loss"]) == 7
    assert all(len(r) == len(probes["units"]) == len(probes["signals"]) for r in probes["ranks"])
    assert "Spearman (held-out configs)" in (tmp_path / "perf_model-smoke.md").read_text()


def test_shrink_feature_counts_masked_warm_up_columns():
    from mobile_peft.bench.perf_model import shrink_feature

    units = {"a::lora": {"r_max": 8, "params_per_rank": 1}, "b::lora": {"r_max": 8, "params_per_rank": 1}}
    start, signals = {"a::lora": 2, "b::lora": 2}, {"a::lora": 3.0, "b::lora": 1.0}
    assert shrink_feature(start, start, signals, units) == 0.0
    assert shrink_feature({"a::lora": 4, "b::lora": 2}, start, signals, units) == 0.0  # growing loses nothing
    assert shrink_feature({"a::lora": 1, "b::lora": 0}, start, signals, units) == pytest.approx((3 * 1 + 1 * 2) / (3 * 2 + 1 * 2))
