"""The fleet benchmark: rank-heterogeneous federated personalisation of a pre-trained ``tiny`` VLM.

Protocol (fixed before any result was seen):

* base: the rank benchmark's pre-trained ``tiny`` (:func:`mobile_peft.bench.ranks.pretrained_base`,
  cached under ``benchmarks/.cache``), int8 backbone, LoRA ``r_max`` on the preset's default
  targets, exported as an ``onnx`` training bundle (cached): every client trains that bundle with
  the on-device runtime;
* clients: ``clients`` non-IID digits clients (:mod:`.partition`: a task each, a few digit
  classes each, a device tier each); ``heldout`` more clients of the same generator never train
  in the federation;
* methods, one after the other on the same Flower simulation, same rounds / fraction / local
  steps / seeds: ``rank-aware`` (ours), ``hetlora``, ``flexlora`` on the tiers' per-module ranks,
  and ``fedavg`` with every client at ``uniform_rank`` -- the tiers' mean, so both send the same
  bytes in expectation (the table reports the measured bytes);
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .partition import PartitionConfig, client_data, client_ranks
from .server import ServerConfig

__all__ = ["FleetBenchConfig", "markdown_table", "run_fleet_bench", "smoke_config"]

logger = logging.getLogger(__name__)

METHODS = ("rank-aware", "fedavg", "hetlora", "flexlora")


@dataclass
class FleetBenchConfig:
    clients: int = 100
    heldout: int = 20
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
    return [client_data(i, config.partition) for i in range(config.clients, config.clients + config.heldout)]


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
    servers = tuple(
        ServerConfig(rule=m, rounds=config.rounds, fraction=config.fraction, local_steps=config.local_steps, lr=config.lr,
                     uniform_rank=config.uniform_rank if m == "fedavg" else None, seed=config.seed)
        for m in config.methods
    )
    setup = FleetSetup(str(bundle), config.partition, servers, config.clients, initial=initial)
    simulated = time.perf_counter()
    result = run_simulation(setup, verbose=verbose, cpus=config.cpus, on_round=on_round)
    simulated = time.perf_counter() - simulated
    local_only: dict[int | None, float] = {}  # by uniform rank (None: the tiers' ranks)
    rows = []
    for server, run in zip(servers, result["runs"]):
        uniform = server.uniform_rank
        if uniform not in local_only:
            local_only[uniform] = _local_only(trainer, initial, config, uniform)
        scores = {**_federated(trainer, run["params"], config, uniform), "local_only_accuracy": local_only[uniform]}
        rounds = run["rounds"]
        rows.append({
            "method": server.rule,
            "ranks": f"uniform {uniform}" if uniform is not None else "tiers " + "/".join(map(str, config.partition.tier_ranks)) + " ±1",
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


def markdown_table(results: dict[str, Any], command: str) -> str:
    cfg = results["config"]
    lines = [
        "# Fleet benchmark",
        "",
        f"`{command}` -- {cfg['clients']} clients ({results['registered_clients']} registered), "
        f"{cfg['fraction']:.0%} per round, {cfg['rounds']} rounds, {cfg['local_steps']} local steps, "
        f"{cfg['heldout']} held-out clients, {cfg['personal_steps']} personalisation steps; "
        f"whole run {results['total_seconds']:.0f} s.",
        "",
        "| method | ranks | global acc. (held-out) | personalised | local-only | bytes / round | rounds lost | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['method']} | {r['ranks']} | {100 * r['global_accuracy']:.1f} % | {100 * r['personalised_accuracy']:.1f} % "
            f"| {100 * r['local_only_accuracy']:.1f} % | {r['bytes_per_round'] / 1024:.1f} KiB | {r['rounds_lost']} "
            f"| {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"
