"""`bench ranks --preset <gguf-backed> --smoke`: the real-model benchmark's code path (alignment,
our allocators, uniform at 8x, PEFT's LoRA and AdaLoRA) on a tiny GGUF the test writes."""

from __future__ import annotations

import json

from mobile_peft.cli import main

METHODS = {"uniform", "hydra-rank", "ard", "uniform-8x", "peft-lora", "peft-adalora"}


def test_preset_rank_bench_smoke(tmp_path, write_tiny_gguf, capsys):
    write_tiny_gguf(tmp_path / "lm.gguf")
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["bench", "ranks", "--preset", str(tmp_path / "lm.gguf"), "--smoke", "--cache", str(cache), "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "ranks-lm-smoke.json").read_text())
    assert results["complete"] and results["preset"] == "lm" and not results["base_cached"]
    assert results["alignment"]["steps"] == 1 and 0.0 <= results["alignment"]["accuracy_after"] <= 1.0
    rows = results["rows"]
    assert {r["method"] for r in rows} == METHODS and all(r["adapter"] == "lora" for r in rows)
    for row in rows:  # the same row format as ranks.json
        assert {"task", "method", "adapter", "seed", "accuracy", "eval_loss", "trainable_params", "wall_s"} <= set(row)
        assert 0.0 <= row["accuracy"] <= 1.0 and row["trainable_params"] > 0
    by = {r["method"]: r for r in rows}
    budget = by["uniform"]["budget_params"]
    assert by["uniform-8x"]["budget_params"] == 8 * budget
    assert by["peft-lora"]["trainable_params"] == budget, "PEFT's LoRA at rank 2 on the same modules = our budget"
    assert 0 < by["peft-adalora"]["trainable_params"] <= 8 * budget
    summary = {e["method"]: e for e in results["summary"]}
    assert summary["peft-lora"]["vs_uniform"]["baseline"] == "uniform/lora"
    table = (out / "ranks-lm-smoke.md").read_text()
    assert "peft-adalora" in table and "aligned 1 steps" in table
    # a second run reuses the cached alignment
    assert main(argv) == 0
    assert json.loads((out / "ranks-lm-smoke.json").read_text())["base_cached"]
