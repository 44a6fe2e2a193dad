"""The fleet benchmark: rank-heterogeneous federated personalisation of a pre-trained ``tiny`` VLM.

Protocol (fixed before any result was seen):

* base: the rank benchmark's pre-trained ``tiny`` (:func:`mobile_peft.bench.ranks.pretrained_base`,
  cached under ``benchmarks/.cache``), int8 backbone, LoRA ``r_max`` on the preset's default
  targets, exported as an ``onnx`` training bundle (cached): every client trains that bundle with
  the on-device runtime;
* clients: ``clients`` non-IID digits clients (:mod:`.partition`: a task each, a few digit
  classes each, a device tier each); ``heldout`` more clients of the same generator never train
  in the federation and fill the table; the ``heldout`` clients after those are the validation
  clients (``validation=True`` scores them instead), where settings are chosen;
* methods, one after the other on the same Flower simulation, same rounds / fraction / local
  steps / seeds: ``rank-aware`` (ours), ``hetlora``, ``flexlora`` on the tiers' per-module ranks,
  and ``fedavg`` with every client at ``uniform_rank`` -- the tiers' mean, so both send the same
  bytes in expectation (the table reports the measured bytes); a method may add the server's rank
  schedule (``rank-aware+spectral``, :mod:`.schedule`);
* seeds (:func:`run_fleet_seeds`): each seed is a whole run with its own clients, tiers and
  samples; per method the mean and standard error over seeds, and each method minus ``fedavg``
  paired by seed;
* metrics on the held-out clients at their own ranks (uniform for fedavg): global accuracy (the
  final global adapter on their eval images), personalised accuracy (``personal_steps`` local steps
  from the global adapter, then eval), local-only accuracy (the same steps from the bundle's
  initial adapter); wall time = the federated rounds (Ray start-up and evaluation excluded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.core.errors import ConfigError

from .partition import PartitionConfig, client_data, client_ranks
from .rules import get_rule
from .server import ServerConfig

__all__ = ["FleetBenchConfig", "markdown_table", "run_fleet_bench", "run_fleet_seeds", "smoke_config"]

logger = logging.getLogger(__name__)

METHODS = ("rank-aware", "fedavg", "hetlora", "flexlora")


@dataclass
class FleetBenchConfig:
    clients: int = 100
    heldout: int = 20
    validation: bool = False  # score the next ``heldout`` clients instead: for choosing settings
    rounds: int = 20
    fraction: float = 0.1
    local_steps: int = 10
    personal_steps: int = 10
    methods: tuple[str, ...] = METHODS
    uniform_rank: int = 4
    r_max: int = 8
    batch_size: int = 8
    lr: float | None = None  # default: the bundle's
    seed: int = 0
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    cache_dir: str = "benchmarks/.cache"
    cpus: int | None = None

    def bundle_key(self) -> str:
        from mobile_peft.bench.ranks import BenchConfig

        text = json.dumps(["fleet-bundle", BenchConfig(cache_dir=self.cache_dir).base_key(), self.r_max, self.batch_size])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def smoke_config(cache_dir: str) -> FleetBenchConfig:
    """Seconds-long settings for the suite (with a given small bundle): well-formed results only."""
    return FleetBenchConfig(
        clients=4, heldout=2, rounds=1, fraction=0.5, local_steps=1, personal_steps=1, uniform_rank=2,
        partition=PartitionConfig(tier_ranks=(1, 2, 3), train_examples=8, eval_examples=4), cache_dir=cache_dir,
    )


def method_server(method: str, config: FleetBenchConfig) -> ServerConfig:
    """A method is an aggregation rule, optionally ``+`` a rank schedule (``rank-aware+spectral``)."""
    rule, _, schedule = method.partition("+")
    return ServerConfig(rule=rule, rounds=config.rounds, fraction=config.fraction, local_steps=config.local_steps,
                        lr=config.lr, uniform_rank=config.uniform_rank if get_rule(rule).uniform_ranks else None,
                        schedule=schedule or "declared", seed=config.seed)


def benchmark_bundle(config: FleetBenchConfig) -> Path:
    """The pre-trained tiny base + LoRA ``r_max``, exported as an onnx bundle (cached)."""
    from mobile_peft.bench.ranks import BenchConfig, pretrained_base
    from mobile_peft.export.bundle import export_bundle

    target = Path(config.cache_dir) / f"fleet-bundle-{config.bundle_key()}"
    if (target / "manifest.json").is_file():
        return target
    model, tokenizer, _, _ = pretrained_base(BenchConfig(cache_dir=config.cache_dir))
    tmp = target.with_name(target.name + ".tmp")
    export_bundle((model, tokenizer), "onnx", tmp, quant="int8", adapter="lora", rank=config.r_max,
                  batch_size=config.batch_size, seed=0)
    tmp.rename(target)
    return target


def _heldout(config: FleetBenchConfig) -> list[Any]:
    """The scored clients: the held-out block after the fleet's, or (``validation``) the block after
    that -- settings are chosen there, and the held-out clients only fill the table."""
    first = config.clients + (config.heldout if config.validation else 0)
    return [client_data(i, config.partition) for i in range(first, first + config.heldout)]


def _local_only(trainer: Any, initial: dict[str, np.ndarray], config: FleetBenchConfig, uniform: int | None) -> float:
    """Mean held-out accuracy after ``personal_steps`` local steps from the bundle's initial adapter."""
    scores = []
    for data in _heldout(config):
        ranks = client_ranks(trainer.layout, data.index, config.partition, uniform)
        start = trainer.layout.slice_params(initial, ranks)
        tuned = trainer.fit(start, ranks, data.train, config.personal_steps, 7_000_003 + data.index, config.lr)
        scores.append(trainer.accuracy(tuned.tensors, ranks, data.eval))
    return float(np.mean(scores))


def _federated(trainer: Any, params: dict[str, np.ndarray], config: FleetBenchConfig, uniform: int | None) -> dict[str, float]:
    """Mean held-out accuracy of the global adapter, and after ``personal_steps`` local steps from it."""
    glob, personal = [], []
    for data in _heldout(config):
        ranks = client_ranks(trainer.layout, data.index, config.partition, uniform)
        start = trainer.layout.slice_params(params, ranks)
        glob.append(trainer.accuracy(start, ranks, data.eval))
        tuned = trainer.fit(start, ranks, data.train, config.personal_steps, 7_000_003 + data.index, config.lr)
        personal.append(trainer.accuracy(tuned.tensors, ranks, data.eval))
    return {"global_accuracy": float(np.mean(glob)), "personalised_accuracy": float(np.mean(personal))}


def run_fleet_bench(config: FleetBenchConfig, bundle: str | Path | None = None, verbose: bool = False,
                    on_round: Any = None) -> dict[str, Any]:
    from mobile_peft.runtime.bundle import Bundle

    from .apps import FleetSetup
    from .client import LocalTrainer
    from .simulate import run_simulation

    start = time.perf_counter()
    bundle = Path(bundle) if bundle is not None else benchmark_bundle(config)
    trainer = LocalTrainer(Bundle.open(bundle))
    initial = trainer.initial()
    servers = tuple(method_server(m, config) for m in config.methods)
    setup = FleetSetup(str(bundle), config.partition, servers, config.clients, initial=initial)
    simulated = time.perf_counter()
    result = run_simulation(setup, verbose=verbose, cpus=config.cpus, on_round=on_round)
    simulated = time.perf_counter() - simulated
    local_only: dict[int | None, float] = {}  # by uniform rank (None: the tiers' ranks)
    rows = []
    for method, server, run in zip(config.methods, servers, result["runs"]):
        uniform = server.uniform_rank
        if uniform not in local_only:
            local_only[uniform] = _local_only(trainer, initial, config, uniform)
        scores = {**_federated(trainer, run["params"], config, uniform), "local_only_accuracy": local_only[uniform]}
        rounds = run["rounds"]
        tiers = "tiers " + "/".join(map(str, config.partition.tier_ranks))
        rows.append({
            "method": method,
            "ranks": (f"uniform {uniform}" if uniform is not None else
                      tiers + (" budgets, spectral schedule" if server.schedule == "spectral" else " ±1")),
            **scores,
            "bytes_per_round": float(np.mean([r["bytes_down"] + r["bytes_up"] for r in rounds])),
            "rounds_lost": sum(1 for r in rounds if r["accepted"] == 0),
            "rejected": sum(len(r["rejected"]) for r in rounds),
            "failed": sum(len(r["failed"]) for r in rounds),
            "wall_seconds": round(run["seconds"], 1),
            "rounds": rounds,
        })
    return {
        "benchmark": "fleet",
        "complete": True,
        "config": {**asdict(config), "bundle": str(bundle)},
        "registered_clients": result["registered"],
        "simulation_seconds": round(simulated, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }


SCORES = ("global_accuracy", "personalised_accuracy", "local_only_accuracy")


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else None)


def run_fleet_seeds(config: FleetBenchConfig, seeds: tuple[int, ...], bundle: str | Path | None = None,
                    verbose: bool = False, on_round: Any = None) -> dict[str, Any]:
    """:func:`run_fleet_bench` once per seed (each seed draws its own clients, tiers and samples:
    ``config.seed`` and the partition's seed both take it), and per method the mean and standard
    error over seeds; ``paired``: each method minus ``fedavg`` (when run), seed by seed."""
    if not seeds:
        raise ConfigError("seeds: expected at least one, e.g. 0 or 0,1,2.")
    start = time.perf_counter()
    runs = []
    for seed in seeds:
        one = replace(config, seed=seed, partition=replace(config.partition, seed=seed))
        runs.append(run_fleet_bench(one, bundle=bundle, verbose=verbose, on_round=on_round))
    rows = []
    for i, method in enumerate(config.methods):
        per_seed = [run["rows"][i] for run in runs]
        row = {"method": method, "ranks": per_seed[0]["ranks"], "seeds": list(seeds)}
        for key in SCORES:
            row[key], row[key + "_se"] = _mean_se([r[key] for r in per_seed])
        row["bytes_per_round"] = float(np.mean([r["bytes_per_round"] for r in per_seed]))
        for key in ("rounds_lost", "rejected", "failed"):
            row[key] = int(sum(r[key] for r in per_seed))
        row["wall_seconds"] = round(float(np.mean([r["wall_seconds"] for r in per_seed])), 1)
        row["per_seed"] = [{"seed": seed, **{k: r[k] for k in SCORES}, "rounds": r["rounds"]}
                           for seed, r in zip(seeds, per_seed)]
        rows.append(row)
    paired = []
    if "fedavg" in config.methods:
        base = config.methods.index("fedavg")
        for i, method in enumerate(config.methods):
            if i == base:
                continue
            entry: dict[str, Any] = {"method": method, "versus": "fedavg", "seeds": len(seeds)}
            for key in ("global_accuracy", "personalised_accuracy"):
                diffs = [run["rows"][i][key] - run["rows"][base][key] for run in runs]
                entry[key + "_diff"], entry[key + "_diff_se"] = _mean_se(diffs)
                entry[key + "_diffs"] = diffs
            paired.append(entry)
    return {
        "benchmark": "fleet",
        "complete": True,
        "config": {**runs[0]["config"], "seeds": list(seeds)},
        "registered_clients": runs[0]["registered_clients"],
        "simulation_seconds": round(sum(r["simulation_seconds"] for r in runs), 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "paired": paired,
    }


def _pct(mean: float, se: float | None) -> str:
    return f"{100 * mean:.1f} %" + (f" ± {100 * se:.1f}" if se is not None else "")


def _points(paired: dict[str, Any], key: str) -> str:
    se = paired[key + "_diff_se"]
    return f"{100 * paired[key + '_diff']:+.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")


def markdown_table(results: dict[str, Any], command: str) -> str:
    cfg = results["config"]
    seeds = cfg.get("seeds", [cfg["seed"]])
    scored = "validation" if cfg.get("validation") else "held-out"
    lines = [
        "# Fleet benchmark",
        "",
        f"`{command}` -- {cfg['clients']} clients ({results['registered_clients']} registered), "
        f"{cfg['fraction']:.0%} per round, {cfg['rounds']} rounds, {cfg['local_steps']} local steps, "
        f"{cfg['heldout']} {scored} clients, {cfg['personal_steps']} personalisation steps, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; whole run {results['total_seconds']:.0f} s.",
        "",
        (f"Accuracies: mean ± standard error over the {len(seeds)} seeds." if len(seeds) > 1 else "One seed."),
        "",
        f"| method | ranks | global acc. ({scored}) | personalised | local-only | bytes / round | rounds lost | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['method']} | {r['ranks']} | {_pct(r['global_accuracy'], r.get('global_accuracy_se'))} "
            f"| {_pct(r['personalised_accuracy'], r.get('personalised_accuracy_se'))} "
            f"| {_pct(r['local_only_accuracy'], r.get('local_only_accuracy_se'))} | {r['bytes_per_round'] / 1024:.1f} KiB "
            f"| {r['rounds_lost']} | {r['wall_seconds']:.0f} |"
        )
    if results.get("paired"):
        lines += ["", "Paired by seed, minus `fedavg` (points):", "",
                  "| method | global acc. | personalised | per seed (global) |", "|---|---:|---:|---|"]
        for p in results["paired"]:
            per = ", ".join(f"{100 * d:+.1f}" for d in p["global_accuracy_diffs"])
            lines.append(f"| {p['method']} | {_points(p, 'global_accuracy')} | {_points(p, 'personalised_accuracy')} | {per} |")
    return "\n".join(lines) + "\n"
