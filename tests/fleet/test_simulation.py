"""The fleet on Flower's simulation engine: hostile and dropped clients cost no round; the
benchmark's smoke version writes well-formed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mobile_peft.fleet.apps import FaultPlan, FleetSetup
from mobile_peft.fleet.partition import PartitionConfig
from mobile_peft.fleet.server import ServerConfig

FAULTS = {0: "nan", 1: "crash", 2: "rank", 3: "norm", 4: "shape", 5: "late"}

# The installed console script: stdout/stderr exactly as a user sees them.
CLI = [str(Path(sys.executable).with_name("mobile-peft"))]


def test_hostile_dropped_and_late_clients_lose_no_round(fleet_bundle):
    from mobile_peft.fleet.simulate import run_simulation

    server = ServerConfig(rule="rank-aware", rounds=2, fraction=1.0, local_steps=2, round_timeout=45.0)
    setup = FleetSetup(str(fleet_bundle), PartitionConfig(tier_ranks=(1, 2, 3), train_examples=8, eval_examples=4),
                       (server,), n_clients=8, faults=FaultPlan(FAULTS, late_seconds=60.0, rounds=(1,)))
    seen = []
    result = run_simulation(setup, on_round=lambda config, report: seen.append(report))
    assert result["registered"] == 8
    run = result["runs"][0]
    assert len(run["rounds"]) == 2 and all(r["accepted"] >= 2 for r in run["rounds"])  # zero rounds lost
    assert run["rounds"][1]["accepted"] >= 6  # round 2: faults off, the late phone's node may still be asleep
    first = seen[0]
    assert sorted(first.accepted) == ["6", "7"]
    reasons = {r.client: r.reason for r in first.rejected}
    assert "non-finite" in reasons["0"] and "r_max" in reasons["2"] and "MADs" in reasons["3"] and "shape" in reasons["4"]
    assert {"1", "5"} <= set(first.failed)  # the crash and the late reply
    assert first.bytes_down > 0 and first.bytes_up > 0
    assert all(np.isfinite(v).all() for v in run["params"].values())


def test_simulate_smoke_writes_well_formed_results(fleet_bundle, tmp_path):
    out = tmp_path / "fleet.json"
    proc = subprocess.run(
        [*CLI, "fleet", "simulate", str(fleet_bundle), "--smoke", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    saved = json.loads(out.read_text())
    assert printed["rows"] == saved["rows"] and saved["smoke"] is True
    assert [r["method"] for r in saved["rows"]] == ["rank-aware", "fedavg", "hetlora", "flexlora"]
    for row in saved["rows"]:
        for key in ("global_accuracy", "personalised_accuracy", "local_only_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        assert row["bytes_per_round"] > 0 and row["rounds_lost"] == 0
    assert "| rank-aware |" in out.with_suffix(".md").read_text()
    assert "flwr" not in proc.stderr.lower() and "ray" not in proc.stderr.lower(), proc.stderr[-2000:]
