"""The rank-allocation benchmark: personalising a pre-trained ``tiny`` VLM on digits tasks.

Protocol (fixed before any result was seen):

* base: ``tiny`` pre-trained (full fine-tuning, seed 0) on ``digit-name``; cached on disk so every
  method of every run starts from the very same weights;
* downstream tasks: ``next-digit`` (a new label mapping), ``rotated`` (a shifted visual domain),
  ``parity`` (a new question type), each with the shared stratified split of its seed;
* methods at an equal trainable-parameter budget (that of uniform rank ``budget_rank`` on every
  slot, adapters built with ``r_max``): ``uniform``, ``hydra-rank`` and ``ard`` on ``lora`` and on
  ``hydra`` adapters, plus full fine-tuning;
* same steps, batch size and seeds for all; one fixed learning rate per family (adapters
  ``lr_adapter``, full fine-tuning ``lr_full``), never tuned per task;
* wall time of a run = allocator planning (warm-up and probes included) + training; evaluation
  (the whole eval split, exact-match accuracy) is not timed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..adapters import apply_adapters
from ..allocators import active_params, get_allocator, resolve_budget, train_with_allocator
from ..core.errors import ConfigError
from ..models import build_model, load_model, save_model
from ..train import TrainConfig, evaluate, train
from ..train.job import make_adapter_config, make_datasets
from . import _markdown

__all__ = ["BenchConfig", "method_grid", "run_rank_bench", "smoke_config", "summarise"]

logger = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    tasks: tuple[str, ...] = ("next-digit", "rotated", "parity")
    seeds: tuple[int, ...] = (0, 1, 2)
    adapters: tuple[str, ...] = ("lora", "hydra")
    allocators: tuple[str, ...] = ("uniform", "hydra-rank", "ard")
    full: bool = True
    base_task: str = "digit-name"
    pretrain_steps: int = 300
    pretrain_lr: float = 1e-3
    # 240: the fewest of {40, 120, 240} at which uniform LoRA is clearly above chance on every task
    # (validation cut, `--validation 360`; at 40 parity stays at chance, at 120 on one seed of 3).
    steps: int = 240
    batch_size: int = 32
    lr_adapter: float = 3e-3
    lr_full: float = 1e-3
    budget_rank: int = 2
    r_max: int = 8
    train_limit: int | None = None
    eval_limit: int | None = None
    hydra_rank: dict[str, Any] = field(
        default_factory=lambda: {"warmup_steps": 10, "probes": 6, "probe_steps": 8}
    )
    # > 0: hold out the last ``validation`` training examples and score on them instead of the eval
    # split -- what settings are chosen on (``--validation``); the eval split only fills the table.
    validation: int = 0
    ard: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = "benchmarks/.cache"

    def base_key(self) -> str:
        text = json.dumps(
            ["tiny", self.base_task, self.pretrain_steps, self.pretrain_lr, self.batch_size, self.train_limit]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def smoke_config(cache_dir: str) -> BenchConfig:
    """A seconds-long configuration for the test suite (same code path, tiny sizes)."""
    return BenchConfig(
        tasks=("parity",),
        seeds=(0,),
        pretrain_steps=2,
        steps=3,
        batch_size=8,
        train_limit=48,
        eval_limit=16,
        hydra_rank={"warmup_steps": 2, "probes": 3, "probe_steps": 1, "probe_val": 16, "probe_batch_size": 8},
        ard={"plan_steps": 1},
        cache_dir=cache_dir,
    )


def pretrained_base(config: BenchConfig) -> tuple[Any, Any, float, bool]:
    """(model, tokenizer, seconds, cached): the base, pre-trained once and cached on disk."""
    directory = Path(config.cache_dir) / f"base-{config.base_key()}"
    if (directory / "config.json").is_file():
        model, tokenizer = load_model(directory)
        return model, tokenizer, 0.0, True
    start = time.perf_counter()
    model, tokenizer = build_model("tiny", seed=0)
    base_train, _ = make_datasets(
        f"digits:{config.base_task}", tokenizer, model.config.input_spec, 0, train_limit=config.train_limit
    )
    train(
        model,
        base_train,
        TrainConfig(
            steps=config.pretrain_steps,
            lr=config.pretrain_lr,
            batch_size=config.batch_size,
            full=True,
            seed=0,
        ),
    )
    save_model(model, tokenizer, directory)
    return model, tokenizer, time.perf_counter() - start, False


def _one_run(
    config: BenchConfig, base: Any, data: tuple[Any, Any], method: str, adapter: str | None, seed: int
) -> dict[str, Any]:
    model = copy.deepcopy(base)
    train_ds, eval_ds = data
    torch.manual_seed(seed)
    row: dict[str, Any] = {"method": method, "adapter": adapter or "-", "seed": seed}
    if adapter is None:  # full fine-tuning
        cfg = TrainConfig(
            steps=config.steps, batch_size=config.batch_size, lr=config.lr_full, full=True, seed=seed
        )
        result = train(model, train_ds, cfg)
        row.update(trainable_params=result.trainable_params, wall_s=result.wall_time_s, plan_s=0.0)
        row["losses"] = _curve(result.losses)
    else:
        apply_adapters(model, make_adapter_config(adapter, config.r_max, None, model.config.default_targets))
        budget = resolve_budget(model, budget_params=_lora_budget(config, base))
        options = {
            "hydra-rank": {**config.hydra_rank, "seed": seed},
            "ard": {**config.ard, "seed": seed},
        }.get(method, {})
        allocator = get_allocator(method, **options)
        cfg = TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr_adapter, seed=seed)
        run = train_with_allocator(model, train_ds, eval_ds, cfg, allocator, budget)
        perf = run.schedule.performance_model or {}
        row.update(
            trainable_params=active_params(model),
            budget_params=budget,
            budget_max_dev=max(abs(u - budget) / budget for u in run.budget_trace),
            wall_s=run.plan_seconds + run.train.wall_time_s,
            plan_s=run.plan_seconds,
            reallocations=run.reallocations,
            ranks=_rank_summary(run.schedule),
            losses=_curve(run.train.losses),
        )
        if perf:
            row["perf_model"] = {
                "spearman_in_sample": perf["fit"]["spearman_in_sample"],
                "spearman_loo": perf["fit"]["spearman_loo"],
                "probes": perf["fit"]["probes"],
            }
    result_eval = evaluate(model, eval_ds)
    row.update(accuracy=result_eval.accuracy, eval_loss=result_eval.loss)
    row["wall_s"] = round(row["wall_s"], 2)
    row["plan_s"] = round(row["plan_s"], 2)
    return row


def _curve(losses: list[float]) -> list[float]:
    """A run's training loss per step, rounded: the learning curve the benchmark plots."""
    return [round(v, 4) for v in losses]


def chance_level(eval_ds: Any) -> float:
    """Exact-match accuracy of always answering the eval split's most common answer."""
    answers = statistics.multimode(ex.answer for ex in eval_ds.examples)
    return sum(ex.answer == answers[0] for ex in eval_ds.examples) / len(eval_ds.examples)


def _lora_budget(config: BenchConfig, base: Any) -> int:
    """The one budget of every adapter run: uniform LoRA of rank ``budget_rank`` on the default
    targets (Hydra adapters get the same number of parameters, not the same rank)."""
    from ..allocators import budget_from_rank

    probe = copy.deepcopy(base)
    apply_adapters(probe, make_adapter_config("lora", config.r_max, None, probe.config.default_targets))
    return budget_from_rank(probe, config.budget_rank)


def _rank_summary(schedule: Any) -> dict[str, float]:
    """Mean active rank per tower x block in the last phase (what the allocator ended with)."""
    from ..core.units import module_place

    sums: dict[str, list[int]] = {}
    for module, slots in schedule.phases[-1].ranks.items():
        place = module_place(module)
        for r in slots.values():
            sums.setdefault(f"{place.tower}.{place.block}", []).append(r)
    return {k: round(sum(v) / len(v), 2) for k, v in sorted(sums.items())}


def method_grid(config: BenchConfig) -> list[tuple[str, str | None]]:
    """(method, adapter) pairs of one task x seed: every allocator on every adapter, then full."""
    return [(a, ad) for ad in config.adapters for a in config.allocators] + ([("full", None)] if config.full else [])


def run_rank_bench(
    config: BenchConfig,
    progress: Callable[[str], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    base: tuple[Any, Any, float, bool] | None = None,
    methods: list[tuple[str, str | None]] | None = None,
    runner: Callable[..., dict[str, Any]] | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole grid; returns the JSON-ready results (rows + summary). ``checkpoint`` gets
    the partial results (``"complete": False``) after every run. ``base`` ((model, tokenizer,
    seconds, cached); default the pre-trained tiny base), ``methods`` (default
    :func:`method_grid`) and ``runner`` (default one allocator run) let another base model reuse
    the same protocol (:mod:`.ranks_preset`). ``resume``: the results of an earlier, stopped run of
    the same config; its rows are kept and only the missing runs are run."""
    start = time.perf_counter()
    done = _resumable(config, resume)
    base, tokenizer, pretrain_s, cached = base or pretrained_base(config)
    spec = base.config.input_spec
    rows = []
    earlier = float(resume.get("total_seconds", 0.0)) if done else 0.0
    chance: dict[str, float] = {}
    methods = methods or method_grid(config)
    runner = runner or _one_run
    # Seed-major order: a partial run (see ``checkpoint``) covers every task before a 2nd seed.
    for seed in config.seeds:
        for task in config.tasks:
            data = make_datasets(
                f"digits:{task}",
                tokenizer,
                spec,
                seed,
                train_limit=config.train_limit,
                eval_limit=config.eval_limit,
            )
            if config.validation:
                data = data[0].split_tail(config.validation)
            chance[task] = max(chance.get(task, 0.0), chance_level(data[1]))
            for method, adapter in methods:
                row = done.get((task, seed, method, adapter or "-"))
                if row is not None:
                    rows.append(row)
                    continue
                row = {"task": task, **runner(config, base, data, method, adapter, seed)}
                rows.append(row)
                msg = f"{task} seed {seed} {method}/{row['adapter']}: acc {row['accuracy']:.3f} in {row['wall_s']:.1f}s"
                logger.info(msg)
                if progress:
                    progress(msg)
                if checkpoint:
                    checkpoint(
                        _results(
                            config, rows, chance, pretrain_s, cached, earlier + time.perf_counter() - start, complete=False
                        )
                    )
    return _results(config, rows, chance, pretrain_s, cached, earlier + time.perf_counter() - start, complete=True)


def _resumable(config: BenchConfig, resume: dict[str, Any] | None) -> dict[tuple, dict[str, Any]]:
    """The rows of ``resume`` by (task, seed, method, adapter); refuses results of another config."""
    if not resume:
        return {}
    mine = json.loads(json.dumps(asdict(config)))
    theirs = resume.get("config", {})
    differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differing:
        raise ConfigError(
            f"cannot resume: the earlier results were run with another config ({', '.join(differing)} differ, e.g. "
            f"{differing[0]}={theirs.get(differing[0])!r} vs {mine.get(differing[0])!r} now). Run without --resume "
            "(or with another --name) to start over."
        )
    return {(r["task"], r["seed"], r["method"], r["adapter"]): r for r in resume.get("rows", [])}


def _results(
    config: BenchConfig,
    rows: list[dict[str, Any]],
    chance: dict[str, float],
    pretrain_s: float,
    cached: bool,
    total: float,
    complete: bool,
) -> dict[str, Any]:
    return {
        "complete": complete,
        "chance": chance,
        "config": asdict(config),
        "pretrain_seconds": round(pretrain_s, 1),
        "base_cached": cached,
        "total_seconds": round(total, 1),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "summary": summarise(rows, config.tasks),
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(rows: list[dict[str, Any]], tasks: tuple[str, ...]) -> list[dict[str, Any]]:
    """One entry per method x adapter: accuracy mean/std per task and overall, params, wall time."""
    keys = list(dict.fromkeys((r["method"], r["adapter"]) for r in rows))
    out = []
    for method, adapter in keys:
        mine = [r for r in rows if r["method"] == method and r["adapter"] == adapter]
        entry: dict[str, Any] = {"method": method, "adapter": adapter, "runs": len(mine)}
        for task in tasks:
            acc = [r["accuracy"] for r in mine if r["task"] == task]
            if acc:
                entry[task] = dict(zip(("mean", "std"), _mean_std(acc)))
        entry["average"] = dict(zip(("mean", "std"), _mean_std([r["accuracy"] for r in mine])))
        entry["trainable_params"] = round(statistics.fmean(r["trainable_params"] for r in mine))
        entry["wall_s_per_run"] = round(statistics.fmean(r["wall_s"] for r in mine), 2)
        paired = _paired_vs_uniform(rows, mine, adapter if adapter != "-" else "lora")
        if paired:
            entry["vs_uniform"] = paired
        rhos = [
            r["perf_model"]["spearman_loo"]
            for r in mine
            if "perf_model" in r and r["perf_model"]["spearman_loo"] == r["perf_model"]["spearman_loo"]
        ]
        if rhos:
            entry["perf_model_spearman_loo"] = round(statistics.fmean(rhos), 3)
            inside = [r["perf_model"]["spearman_in_sample"] for r in mine if "perf_model" in r]
            inside = [
                v for v in inside if v == v
            ]  # nan: a prior-only model predicts one value for every probe
            entry["perf_model_spearman_in_sample"] = round(statistics.fmean(inside), 3) if inside else None
        out.append(entry)
    return out


def _paired_vs_uniform(
    rows: list[dict[str, Any]], mine: list[dict[str, Any]], adapter: str
) -> dict[str, Any] | None:
    """Accuracy difference to ``uniform`` on ``adapter`` run by run (same task, same seed, same
    split): mean, its standard error and wins/pairs -- the task-to-task spread cancels out."""
    base = {
        (r["task"], r["seed"]): r["accuracy"]
        for r in rows
        if r["method"] == "uniform" and r["adapter"] == adapter
    }
    deltas = [r["accuracy"] - base[(r["task"], r["seed"])] for r in mine if (r["task"], r["seed"]) in base]
    if not deltas or mine[0]["method"] == "uniform" and mine[0]["adapter"] == adapter:
        return None
    se = statistics.stdev(deltas) / len(deltas) ** 0.5 if len(deltas) > 1 else 0.0
    return {
        "baseline": f"uniform/{adapter}",
        "mean": statistics.fmean(deltas),
        "se": se,
        "wins": sum(d > 0 for d in deltas),
        "pairs": len(deltas),
    }


def markdown_table(results: dict[str, Any], command: str) -> str:
    """The README table: accuracy mean ± std (x100) per task, average, params, wall time."""
    tasks = results["config"]["tasks"]
    head = [
        "method",
        "adapter",
        *tasks,
        "average",
        "Δ vs uniform (paired)",
        "trainable params",
        "wall s / run",
    ]
    rows = []
    for e in results["summary"]:
        cells = [e["method"], e["adapter"]]
        cells += [f"{100 * e[t]['mean']:.1f} ± {100 * e[t]['std']:.1f}" if t in e else "-" for t in tasks]
        paired = e.get("vs_uniform")
        delta = (
            f"{100 * paired['mean']:+.1f} ± {100 * paired['se']:.1f} ({paired['wins']}/{paired['pairs']} won)"
            if paired
            else "-"
        )
        cells += [
            f"{100 * e['average']['mean']:.1f} ± {100 * e['average']['std']:.1f}",
            delta,
            f"{e['trainable_params']:,}",
            f"{e['wall_s_per_run']:.1f}",
        ]
        rows.append(cells)
    chance = results.get("chance")
    if chance:
        rows.append(["chance", "(most common answer)", *(f"{100 * chance[t]:.1f}" if t in chance else "-" for t in tasks), "", "", "", ""])
    lines = _markdown.table(head, rows)
    cfg = results["config"]
    notes = [
        "",
        ("" if results.get("complete", True) else f"PARTIAL: {len(results['rows'])} runs so far. ")
        + f"Command: `{command}`. Total wall time {results['total_seconds']:.0f} s on {results['threads']} threads "
        f"(pre-training the base: {results['pretrain_seconds']:.0f} s{', cached' if results['base_cached'] else ''}).",
        results.get("base_note", f"Base: tiny pre-trained {cfg['pretrain_steps']} steps on {cfg['base_task']}")
        + f"; {len(cfg['seeds'])} seeds; "
        f"{cfg['steps']} steps, batch {cfg['batch_size']}; budget = uniform LoRA rank {cfg['budget_rank']} for every adapter "
        f"(r_max {cfg['r_max']}); "
        f"lr {cfg['lr_adapter']} (adapters)" + (f", {cfg['lr_full']} (full)" if cfg.get("full", True) else "")
        + ". Wall time includes hydra-rank's warm-up and probes.",
        *(
            [f"VALIDATION run: scored on the last {cfg['validation']} training examples of each task (not trained on); "
             "the eval split was not used."]
            if cfg.get("validation") else []
        ),
        "Accuracy: mean ± std over tasks x seeds. Δ vs uniform: the same run's accuracy minus uniform's on the same adapter "
        "(full: minus uniform/lora) for the same task and seed, mean ± standard error, and how many of the pairs it won.",
    ]
    rhos = [e for e in results["summary"] if "perf_model_spearman_loo" in e]
    for e in rhos:
        notes.append(
            f"hydra-rank/{e['adapter']} performance model: Spearman (leave-one-out over probes) {e['perf_model_spearman_loo']:+.2f}, "
            f"in-sample {_signed(e['perf_model_spearman_in_sample'])} (mean over runs)."
        )
    return "\n".join(lines + notes) + "\n"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def write_results(
    results: dict[str, Any], out_dir: str | Path, command: str, name: str = "ranks"
) -> tuple[Path, Path]:
    return _markdown.write_results({"command": command, **results}, Path(out_dir), name, lambda r: markdown_table(r, command))
