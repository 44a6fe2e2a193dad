"""``mobile-peft bench ranks|export``: the rank-allocation benchmark (:mod:`mobile_peft.bench.ranks`)
and the export benchmark (:mod:`mobile_peft.bench.exports`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ._ui import console, err_console, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="Run a benchmark ('ranks': rank allocators at an equal budget; 'export': bundle sizes, export time and memory; "
        "'reliability': fault-injection and fuzz campaigns; 'speed' / 'memory': bundle training step vs eager PyTorch; "
        "'perf-model': the performance model's rank correlation on held-out rank configurations; 'levers': the pte export's "
        "levers before/after with a per-op profile).",
    )
    p.add_argument("suite", choices=["ranks", "export", "reliability", "speed", "memory", "perf-model", "levers"], help="Which benchmark.")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="Where ranks.json and ranks.md go."
    )
    p.add_argument("--cache", default="benchmarks/.cache", help="Cache of the pre-trained base.")
    p.add_argument(
        "--tasks", default=None, help="Comma list of digits tasks (default: next-digit,rotated,parity)."
    )
    p.add_argument("--seeds", type=int, default=None, help="Number of seeds (default 3).")
    p.add_argument("--steps", type=int, default=None, help="Fine-tuning steps per run (ranks default 240; smollm2-vlm 60).")
    p.add_argument(
        "--methods", default=None,
        help="ranks: comma list of allocators to run, 'full' for full fine-tuning (default: every one).",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads (the benchmark is specified on 2 cores)."
    )
    p.add_argument(
        "--hydra-ridge",
        default=None,
        help="hydra-rank performance-model ridge: a positive number, or 'loo' to choose it by leave-one-out over the probes (default: the allocator's, 1.0).",
    )
    p.add_argument(
        "--hydra-option", action="append", default=[], metavar="KEY=VALUE",
        help="ranks: a hydra-rank setting for this run (repeatable; e.g. reallocate_every=0, probe_steps=16; "
        "values are JSON).",
    )
    p.add_argument(
        "--ard-option", action="append", default=[], metavar="KEY=VALUE",
        help="ranks: an ard setting for this run (repeatable; e.g. min_rank=0, lambda1=0.01; values are JSON).",
    )
    p.add_argument(
        "--validation", type=int, default=None, metavar="N",
        help="ranks: score on the last N training examples (held out from training) instead of the eval split -- "
        "for choosing settings; writes <name>-validation.",
    )
    p.add_argument("--name", default=None, help="Results file stem (default: ranks).")
    p.add_argument("--smoke", action="store_true", help="A seconds-long version (what the test suite runs).")
    p.add_argument(
        "--resume", action="store_true",
        help="ranks: keep the runs of an earlier, stopped run of the same config (its --out/--name JSON) and run the rest.",
    )
    sp = p.add_argument_group("speed benchmark")
    sp.add_argument("--presets", default="tiny", help="Comma list of presets (speed).")
    sp.add_argument("--batches", default="1,8", help="Comma list of batch sizes (speed).")
    r = p.add_argument_group("reliability campaigns")
    r.add_argument("--kills", type=int, default=20, help="SIGKILLs per bundle format (fault injection).")
    r.add_argument("--fuzz-examples", type=int, default=2000, help="Generated inputs per fuzz target.")
    g = p.add_argument_group("export benchmark")
    g.add_argument(
        "--preset",
        default=None,
        help="Model preset. export: random weights, built once (default smolvlm-256m); ranks: the base (default tiny; "
        "smollm2-vlm, or a .gguf file, runs the benchmark on a pretrained language model after an alignment stage).",
    )
    g.add_argument("--formats", default=None, help="Comma list of bundle formats (export: pte,onnx,coreml; memory, speed: pte,onnx).")
    g.add_argument("--targets", default=None, help="Comma list of adapter target sets (memory, speed: default,language+projector; speed default: default).")
    g.add_argument("--adapters", default=None, help="Comma list of adapters (export default: lora; speed: lora,hydra).")
    g.add_argument("--quant", default="int8", help="Backbone quantisation (none|int8|int4).")
    g.add_argument("--rank", type=int, default=8, help="Adapter rank.")
    g.add_argument("--batch-size", type=int, default=None, help="Batch size fixed in the bundles (export: 1; levers: 8).")
    p.set_defaults(run=run)


def _command() -> str:
    argv = sys.argv[1:]
    return "mobile-peft " + " ".join(shlex.quote(a) for a in argv) if "bench" in argv else "mobile-peft bench"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import BenchConfig, run_rank_bench, smoke_config

    torch.set_num_threads(args.threads)
    if args.suite == "export":
        return _run_export(args)
    if args.suite == "reliability":
        return _run_reliability(args)
    if args.suite == "speed":
        return _run_speed(args)
    if args.suite == "memory":
        return _run_memory(args)
    if args.suite == "perf-model":
        return _run_perf_model(args)
    if args.suite == "levers":
        return _run_levers(args)
    if args.preset and args.preset != "tiny":
        return _run_preset_ranks(args)
    config = smoke_config(args.cache) if args.smoke else BenchConfig(cache_dir=args.cache)
    _override_ranks(config, args)
    name = args.name or ("ranks-smoke" if args.smoke else "ranks") + ("-validation" if args.validation else "")
    return _run_and_write(run_rank_bench, config, args, name)


def _override_ranks(config: Any, args: argparse.Namespace) -> None:
    """The rank benchmarks' command-line overrides (tiny and preset configs alike)."""
    if args.tasks:
        config.tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if args.seeds:
        config.seeds = tuple(range(args.seeds))
    if args.steps:
        config.steps = args.steps
    if args.methods:
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
        if "full" in chosen and not config.full:
            raise ConfigError(f"--methods full: this benchmark ({type(config).__name__}) has no full fine-tuning row.")
        config.full = "full" in chosen
        config.allocators = tuple(m for m in chosen if m != "full")
    if getattr(args, "adapters", None):
        config.adapters = tuple(a.strip() for a in args.adapters.split(",") if a.strip())
    if args.hydra_ridge is not None:
        config.hydra_rank = {**config.hydra_rank, "ridge": _ridge(args.hydra_ridge)}
    from ..allocators.ard import ARDConfig
    from ..allocators.hydra_rank import HydraRankConfig

    for option in args.hydra_option:
        config.hydra_rank = {**config.hydra_rank, **_allocator_option("--hydra-option", HydraRankConfig, option)}
    for option in args.ard_option:
        config.ard = {**config.ard, **_allocator_option("--ard-option", ARDConfig, option)}
    if args.validation:
        config.validation = args.validation


def _run_and_write(bench: Any, config: Any, args: argparse.Namespace, name: str) -> int:
    """Run a rank benchmark, writing the partial results after every run and the table at the end."""
    from ..bench import write_results
    from .plots import plot_learning_curves

    command = _command()

    def write(results: dict[str, Any]) -> tuple[Path, ...]:
        paths = write_results(results, args.out, command, name=name)
        curves = plot_learning_curves(results, Path(args.out) / f"{name}-curves.png")
        return (*paths, curves) if curves else paths

    earlier = Path(args.out) / f"{name}.json"
    resume = json.loads(earlier.read_text()) if args.resume and earlier.is_file() else None
    if resume is not None:
        err_console.print(f"resuming from {earlier}: {len(resume.get('rows', []))} runs kept", highlight=False)
    results = bench(config, progress=lambda msg: err_console.print(msg, highlight=False), checkpoint=write, resume=resume)
    json_path, md_path, *plots = write(results)
    console.print(md_path.read_text(), markup=False, highlight=False)
    console.print(f"wrote {json_path}, {md_path}" + "".join(f", {p}" for p in plots))
    return 0


def _run_preset_ranks(args: argparse.Namespace) -> int:
    from ..bench.ranks_preset import PresetBenchConfig, preset_smoke_config, run_preset_rank_bench
    from ..train.align import source_label

    config = preset_smoke_config(args.cache, args.preset) if args.smoke else PresetBenchConfig(preset=args.preset, cache_dir=args.cache)
    _override_ranks(config, args)
    name = args.name or f"ranks-{source_label(args.preset).removesuffix('-vlm')}" + ("-smoke" if args.smoke else "") + (
        "-validation" if args.validation else ""
    )
    err_console.print(f"aligning {args.preset} (or reading the cached alignment from {args.cache}) ...", highlight=False)
    return _run_and_write(run_preset_rank_bench, config, args, name)


def _allocator_option(flag: str, settings: type, text: str) -> dict[str, Any]:
    """``KEY=VALUE`` (VALUE as JSON, else a string) checked against an allocator's settings."""
    from dataclasses import fields

    key, sep, value = text.partition("=")
    known = sorted(f.name for f in fields(settings))
    if not sep or key.strip() not in known:
        raise ConfigError(f"{flag} {text!r}; expected KEY=VALUE with KEY one of {', '.join(known)}.")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return {key.strip(): parsed}


def _ridge(text: str) -> float | None:
    if text == "loo":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--hydra-ridge {text!r}; expected a positive number or 'loo'.") from None


def _run_export(args: argparse.Namespace) -> int:
    from ..bench.exports import ExportBenchConfig, export_markdown, run_export_bench

    config = ExportBenchConfig(
        preset=args.preset or "smolvlm-256m",
        quant=args.quant,
        formats=tuple(f.strip() for f in (args.formats or "pte,onnx,coreml").split(",") if f.strip()),
        adapters=tuple(a.strip() for a in (args.adapters or "lora").split(",") if a.strip()),
        rank=args.rank,
        batch_size=args.batch_size or 1,
        work_dir=str(Path(args.cache) / "exports"),
    )
    results = run_export_bench(config)
    command = _command()
    name = args.name or "exports"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{name}.json", args.out / f"{name}.md"
    json_path.write_text(json.dumps({"command": command, **results}, indent=1) + "\n")
    md_path.write_text(export_markdown(results, command))
    console.print(md_path.read_text(), markup=False, highlight=False)
    console.print(f"wrote {json_path} and {md_path}")
    return 0 if all(r["exports"] for r in results["rows"]) else 1


def _run_reliability(args: argparse.Namespace) -> int:
    from ..bench.reliability import run_reliability

    kills, examples = (2, 100) if args.smoke else (args.kills, args.fuzz_examples)
    result = run_reliability(args.out, Path(args.cache), kills=kills, fuzz_examples=examples)
    rows = [(f"fuzz {name}", f"{r['inputs_tried']:,} inputs, {r['escaped']} escaped, {r['seconds']} s")
            for name, r in result["fuzz"].items()]
    for fmt, f in result["faults"].items():
        rows.append((f"SIGKILL {fmt}", f"{f['kills']} kills survived ({f['kills_in_writes']} inside checkpoint writes), "
                     f"{f['resumes']} resumes over {f['runs']} runs"))
        rows.append((f"  {fmt} checkpoints", f"{f['checkpoints_checked']:,} checked, {f['corrupt_checkpoints']} corrupt"))
        rows.append((f"  {fmt} data lost", f"{f['steps_lost']} steps lost, {f['adapters_differing']} final adapters differing"))
    console.print(table("reliability campaigns", ["campaign", "result"], rows))
    console.print(f"wrote {args.out / 'reliability.json'} ({result['seconds']} s)")
    bad = sum(f["corrupt_checkpoints"] + f["steps_lost"] + f["adapters_differing"] for f in result["faults"].values())
    return 1 if bad else 0


def _run_speed(args: argparse.Namespace) -> int:
    from ..bench.speed import SpeedBenchConfig, run_speed_bench, write_speed

    def items(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    work_dir = str(Path(args.cache) / "workloads")  # shared with bench memory
    if args.smoke:
        config = SpeedBenchConfig(adapters=("lora",), batches=(1,), formats=("onnx",), steps=2, warmup=1,
                                  work_dir=work_dir)
    else:
        config = SpeedBenchConfig(presets=items(args.presets), adapters=items(args.adapters or "lora,hydra"),
                                  targets=items(args.targets or "default"), formats=items(args.formats or "pte,onnx"),
                                  batches=tuple(int(b) for b in items(args.batches)), rank=args.rank,
                                  steps=args.steps or 12, threads=args.threads, work_dir=work_dir)
    results = run_speed_bench(config, progress=lambda msg: err_console.print(msg, highlight=False))
    json_path, md_path = write_speed(results, args.out, name=args.name or ("speed-smoke" if args.smoke else "speed"))
    console.print(md_path.read_text(), markup=False, highlight=False)
    console.print(f"wrote {json_path} and {md_path} ({results['seconds']} s)")
    return 0


def _run_memory(args: argparse.Namespace) -> int:
    from ..bench.memory import MemoryBenchConfig, run_memory_bench, write_memory

    def items(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    work_dir = str(Path(args.cache) / "workloads")  # shared with bench speed
    if args.smoke:
        config = MemoryBenchConfig(adapters=("lora",), targets=("default",), batches=(1,), formats=("onnx",),
                                   devices=("galaxy-a14",), steps=2, emulate_steps=1, work_dir=work_dir)
    else:
        config = MemoryBenchConfig(presets=items(args.presets), adapters=items(args.adapters or "lora,hydra"),
                                   batches=tuple(int(b) for b in items(args.batches)), rank=args.rank,
                                   targets=items(args.targets or "default,language+projector"),
                                   formats=items(args.formats or "pte,onnx"),
                                   steps=args.steps or 5, threads=args.threads, work_dir=work_dir)
    name = args.name or ("memory-smoke" if args.smoke else "memory")
    results = run_memory_bench(config, progress=lambda msg: err_console.print(msg, highlight=False),
                               checkpoint=lambda partial: write_memory(partial, args.out, name=name))
    json_path, md_path = write_memory(results, args.out, name=name)
    console.print(md_path.read_text(), markup=False, highlight=False)
    console.print(f"wrote {json_path} and {md_path} ({results['seconds']} s)")
    return 0


def _run_levers(args: argparse.Namespace) -> int:
    from ..bench.levers import LeverBenchConfig, run_lever_bench, write_levers

    config = LeverBenchConfig(preset=args.preset or "tiny", adapter=(args.adapters or "lora").split(",")[0], batch=args.batch_size or 8,
                              quant=args.quant, rank=args.rank, steps=args.steps or 12, threads=args.threads,
                              work_dir=str(Path(args.cache) / "levers"))
    if args.smoke:
        config = LeverBenchConfig(batch=1, variants=("xnnpack+rewrites",), steps=2, warmup=1, profile_steps=1,
                                  work_dir=str(Path(args.cache) / "levers-smoke"))
    results = run_lever_bench(config, progress=lambda msg: err_console.print(msg, highlight=False))
    json_path, md_path = write_levers(results, args.out, name=args.name or ("levers-smoke" if args.smoke else "levers"))
    console.print(md_path.read_text(), markup=False, highlight=False)
    console.print(f"wrote {json_path} and {md_path} ({results['seconds']} s)")
    return 0


def _run_perf_model(args: argparse.Namespace) -> int:
    from ..bench.perf_model import PerfModelBenchConfig, run_perf_model_bench, smoke_config, write_results

    if args.smoke:
        config = smoke_config(str(Path(args.cache) / "perf-model-smoke"))
    else:
        config = PerfModelBenchConfig(seeds=tuple(range(args.seeds or 3)))
    name = args.name or ("perf_model-smoke" if args.smoke else "perf_model")
    results = run_perf_model_bench(config, progress=lambda msg: err_console.print(msg, highlight=False))
    paths = write_results(results, args.out, _command(), name=name)
    console.print(paths[-1].read_text(), markup=False, highlight=False)
    console.print("wrote " + " and ".join(str(p) for p in paths))
    return 0
