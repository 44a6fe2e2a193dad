"""`mobile-peft bench memory --smoke`: well-formed rows side by side with eager, the lower bound
with its terms, and a fits verdict from an emulated run (no figure asserted)."""

from __future__ import annotations

import json

from mobile_peft.cli import main

ROW_KEYS = {"preset", "adapter", "targets", "format", "batch", "peak_growth_bytes", "lower_bound_bytes", "ratio_to_bound",
            "devices", "lower_bound"}


def test_memory_bench_smoke(tmp_path):
    out = tmp_path / "results"
    assert main(["bench", "memory", "--smoke", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = json.loads((out / "memory-smoke.json").read_text())
    eager, onnx = results["rows"]
    for row in (eager, onnx):
        assert ROW_KEYS <= set(row) and row["preset"] == "tiny" and row["batch"] == 1 and row["targets"] == "default"
        assert row["peak_growth_bytes"] > 0 and row["lower_bound_bytes"] == row["lower_bound"]["total_bytes"] > 0
        assert row["ratio_to_bound"] == round(row["peak_growth_bytes"] / row["lower_bound_bytes"], 3)
        assert set(row["devices"]) == {"galaxy-a14"} and row["devices"]["galaxy-a14"]["budget_bytes"] == 1288490189
    assert eager["format"] == "eager" and eager["optimizer"] == onnx["optimizer"] == "adamw"
    assert eager["lower_bound"] == onnx["lower_bound"]  # the same model, batch and optimiser
    assert eager["peak_growth_bytes"] == eager["step_growth_bytes"] + eager["model_bytes"]
    assert eager["devices"]["galaxy-a14"]["fits"] is None  # eager does not ship to a phone: not run
    assert isinstance(onnx["devices"]["galaxy-a14"]["fits"], bool) and onnx["devices"]["galaxy-a14"]["limiter"]
    table = (out / "memory-smoke.md").read_text()
    assert "| tiny | lora | default | 1 | onnx (adamw) |" in table and "Lower bound by term:" in table


def test_memory_bench_refuses_unknown_target_sets_and_formats(tmp_path):
    """Caught before any model is built: the message names what was given and what exists."""
    import pytest

    from mobile_peft.bench.memory import MemoryBenchConfig, run_memory_bench
    from mobile_peft.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown target set\(s\) \['vision'\].*language\+projector"):
        run_memory_bench(MemoryBenchConfig(targets=("default", "vision"), work_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"trained formats \['pte', 'onnx'\], not \['coreml'\]"):
        run_memory_bench(MemoryBenchConfig(formats=("pte", "coreml"), work_dir=str(tmp_path)))
