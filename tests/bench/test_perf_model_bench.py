"""The performance-model benchmark's smoke run: the same code path in seconds, well-formed results."""

import json
import math

from mobile_peft.cli import main


def test_smoke_run_writes_well_formed_results(tmp_path):
    assert main(["bench", "perf-model", "--smoke", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    results = json.loads((tmp_path / "perf_model-smoke.json").read_text())
    (row,) = results["rows"]
    assert row["configs"] == 7
    assert set(row["spearman_test"]) == {"logrank", "spectral", "logrank_prior", "spectral_prior"}
    for value in row["spearman_test"].values():
        assert math.isnan(value) or -1.0 <= value <= 1.0
    assert set(row["allocation_val_loss"]) == {"uniform", "logrank", "spectral"}
    assert all(math.isfinite(v) for v in row["allocation_val_loss"].values())
    assert "Spearman (held-out configs)" in (tmp_path / "perf_model-smoke.md").read_text()
