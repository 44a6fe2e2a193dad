"""The rank benchmark's seconds-long smoke version: same code path, every method, files written."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from mobile_peft.bench import run_rank_bench, smoke_config
from mobile_peft.cli import main


def test_bench_smoke_runs_every_method_from_the_cli(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "out"
    assert main(["bench", "ranks", "--smoke", "--cache", str(cache), "--out", str(out)]) == 0
    results = json.loads((out / "ranks-smoke.json").read_text())
    assert results["complete"]
    methods = {(r["method"], r["adapter"]) for r in results["rows"]}
    assert methods == {(a, ad) for a in ("uniform", "hydra-rank", "ard") for ad in ("lora", "hydra")} | {
        ("full", "-")
    }
    budgets = {r["budget_params"] for r in results["rows"] if r["method"] != "full"}
    assert len(budgets) == 1, "every adapter run has the same budget"
    for row in results["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["wall_s"] >= 0
        if row["method"] != "full":
            assert row["budget_max_dev"] <= 0.01
    table = (out / "ranks-smoke.md").read_text()
    assert table.count("\n|") >= 8 and "hydra-rank" in table
    # the pre-trained base is cached: a second run does not pre-train again
    again = run_rank_bench(
        replace(smoke_config(str(cache)), allocators=("uniform",), adapters=("lora",), full=False)
    )
    assert again["base_cached"] and again["pretrain_seconds"] == 0.0 and len(again["rows"]) == 1
    # learning curves and chance levels come with the results
    assert (out / "ranks-smoke-curves.png").stat().st_size > 0
    assert all(len(r["losses"]) == results["config"]["steps"] for r in results["rows"])
    assert 0.0 < results["chance"]["parity"] <= 1.0 and "chance" in table


def test_bench_resumes_a_stopped_run_and_refuses_another_config(tmp_path, monkeypatch):
    from mobile_peft.core.errors import ConfigError

    config = replace(smoke_config(str(tmp_path / "cache")), allocators=("uniform", "ard"), adapters=("lora",), full=False)
    first = run_rank_bench(replace(config, allocators=("uniform",)))
    partial = {**first, "config": json.loads(json.dumps({**first["config"], "allocators": ["uniform", "ard"]}))}
    ran = []
    import mobile_peft.bench.ranks as ranks

    real = ranks._one_run
    monkeypatch.setattr(ranks, "_one_run", lambda *a: ran.append(a[3]) or real(*a))
    resumed = run_rank_bench(config, resume=partial)
    assert ran == ["ard"]  # uniform's run was kept, not run again
    assert resumed["rows"][0] == first["rows"][0] and [r["method"] for r in resumed["rows"]] == ["uniform", "ard"]
    with pytest.raises(ConfigError, match="cannot resume.*steps"):
        run_rank_bench(replace(config, steps=config.steps + 1), resume=partial)


def test_paired_delta_and_ridge_option():
    from mobile_peft.bench.ranks import summarise
    from mobile_peft.cli.bench import _ridge
    from mobile_peft.core.errors import ConfigError

    rows = [
        {
            "task": t,
            "seed": s,
            "method": m,
            "adapter": "lora",
            "accuracy": acc,
            "trainable_params": 1,
            "wall_s": 1.0,
        }
        for (t, s, m, acc) in [
            ("a", 0, "uniform", 0.4),
            ("a", 1, "uniform", 0.5),
            ("a", 0, "hydra-rank", 0.6),
            ("a", 1, "hydra-rank", 0.4),
        ]
    ]
    entry = {e["method"]: e for e in summarise(rows, ("a",))}
    paired = entry["hydra-rank"]["vs_uniform"]
    assert (
        abs(paired["mean"] - 0.05) < 1e-12
        and abs(paired["se"] - 0.15) < 1e-12
        and (paired["wins"], paired["pairs"]) == (1, 2)
    )
    assert "vs_uniform" not in entry["uniform"]
    assert _ridge("loo") is None and _ridge("0.5") == 0.5
    with pytest.raises(ConfigError, match="--hydra-ridge"):
        _ridge("big")


def test_export_bench_smoke(tmp_path):
    """tiny, onnx only: each export runs in its own process and reports size, time and peak RSS."""
    out = tmp_path / "out"
    argv = [
        "bench",
        "export",
        "--preset",
        "tiny",
        "--formats",
        "onnx",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--name",
        "ex",
    ]
    assert main(argv) == 0
    results = json.loads((out / "ex.json").read_text())
    (row,) = results["rows"]
    assert row["exports"] and row["format"] == "onnx" and row["total_bytes"] == sum(row["sizes"].values())
    assert row["peak_rss_bytes"] > 50e6 and row["export_seconds"] > 0
    assert "| tiny | int8 | lora | onnx | yes |" in (out / "ex.md").read_text()


def test_export_bench_records_a_failed_export(tmp_path):
    from mobile_peft.bench.exports import ExportBenchConfig, run_export_bench

    config = ExportBenchConfig(preset="tiny", formats=("no-such-format",), work_dir=str(tmp_path))
    (row,) = run_export_bench(config)["rows"]
    assert not row["exports"] and row["returncode"] != 0 and "no-such-format" in row["error"]


def test_speed_bench_smoke(tmp_path):
    """`mobile-peft bench speed --smoke`: well-formed rows side by side with eager (no timing asserted)."""
    out = tmp_path / "results"
    assert main(["bench", "speed", "--smoke", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = json.loads((out / "speed-smoke.json").read_text())
    (row,) = results["rows"]
    assert {"preset", "adapter", "targets", "format", "batch", "eager_ms", "step_ms", "ratio_vs_eager"} <= set(row)
    assert row["format"] == "onnx" and row["optimizer"] == "adamw" and row["eager_ms"] > 0 and row["step_ms"] > 0
    assert row["ratio_vs_eager"] == round(row["step_ms"] / row["eager_ms"], 3)
    assert results["machine"]["cpus"] >= 1 and "| tiny | lora | default | 1 | onnx (adamw) |" in (out / "speed-smoke.md").read_text()


def test_levers_bench_smoke(tmp_path):
    """One export variant at batch 1: a row per variant with its ratio and its ETDump profile."""
    pytest.importorskip("executorch")
    out = tmp_path / "out"
    assert main(["bench", "levers", "--smoke", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = json.loads((out / "levers-smoke.json").read_text())
    (row,) = results["rows"]
    assert row["variant"] == "xnnpack+rewrites" and row["rewrites"] and row["xnnpack"] and row["train_arena_bytes"] > 0
    assert row["step_ms"] > 0 and row["eager_ms"] > 0 and row["ratio_vs_eager"] > 0 and row["export_s"] > 0
    assert row["profile"]["ops"] and row["profile"]["kernels_ms"] > 0
    assert "xnnpack+rewrites" in (out / "levers-smoke.md").read_text()


def test_validation_run_scores_a_cut_of_the_training_split(tmp_path, monkeypatch):
    """``--validation N``: the run trains on all but the last N training examples and is scored
    on those N, never on the eval split (settings are chosen on it; the table says so)."""
    import mobile_peft.bench.ranks as ranks
    from mobile_peft.bench import write_results

    seen = []
    real = ranks._one_run
    monkeypatch.setattr(ranks, "_one_run", lambda c, b, data, *a: seen.append(data) or real(c, b, data, *a))
    config = replace(smoke_config(str(tmp_path / "cache")), allocators=("uniform",), adapters=("lora",), full=False, validation=12)
    results = run_rank_bench(config)
    train_ds, scored = seen[0]
    assert len(scored) == 12 and len(train_ds) == config.train_limit - 12
    assert {id(e) for e in scored.examples}.isdisjoint(id(e) for e in train_ds.examples)
    assert results["config"]["validation"] == 12
    _, table = write_results(results, tmp_path, "mobile-peft bench ranks --validation 12", name="v")
    assert "VALIDATION run" in table.read_text()


def test_split_tail_shares_encodings_and_refuses_bad_sizes():
    from mobile_peft.core.digits import load_digits_task
    from mobile_peft.core.errors import ConfigError
    from mobile_peft.data import VQADataset
    from mobile_peft.models import build_model

    model, tokenizer = build_model("tiny", seed=0)
    examples = load_digits_task("parity", "train", seed=0)[:10]
    full = VQADataset(examples, tokenizer, model.config.input_spec)
    head, tail = full.split_tail(3)
    assert len(head) == 7 and len(tail) == 3 and tail.examples == examples[7:]
    for i in range(3):
        assert all(torch.equal(tail[i][k], full[7 + i][k]) for k in ("pixel_values", "input_ids", "labels"))
    for bad in (0, 10, -1, True):
        with pytest.raises(ConfigError, match="validation cut"):
            full.split_tail(bad)


def test_cli_methods_and_allocator_options_reach_the_config(tmp_path, monkeypatch, capsys):
    import mobile_peft.bench as bench

    seen = []

    def stop(config, **_):
        seen.append(config)
        raise KeyboardInterrupt  # the CLI's own exit path: nothing runs

    monkeypatch.setattr(bench, "run_rank_bench", stop)
    argv = ["bench", "ranks", "--smoke", "--out", str(tmp_path), "--cache", str(tmp_path / "c")]
    assert main([*argv, "--methods", "uniform,full", "--hydra-option", "reallocate_every=0",
                 "--hydra-option", "ridge=null", "--ard-option", "min_rank=0", "--validation", "8"]) == 130
    config = seen[0]
    assert config.allocators == ("uniform",) and config.full and config.validation == 8
    assert config.hydra_rank["reallocate_every"] == 0 and config.hydra_rank["ridge"] is None
    assert config.ard["min_rank"] == 0
    assert main([*argv, "--hydra-option", "probe_stepz=3"]) == 2
    assert "probe_stepz" in capsys.readouterr().err
    assert main([*argv, "--ard-option", "lambda3=1"]) == 2
    err = capsys.readouterr().err
    assert "--ard-option" in err and "lambda1" in err
