"""Does HyDRA's performance model predict? Out-of-sample rank correlation on the ``tiny`` setup.

Protocol (fixed before any result was seen):

* the base, tasks, budget (uniform LoRA rank ``budget_rank``), ``r_max`` and learning rate of the
  rank benchmark (:mod:`.ranks`); per task x seed x adapter, the seed's training split only:
  its last ``probe_val`` examples are the validation cut, the rest trains (the eval split is
  never read);
* warm-up ``warmup_steps`` at uniform rank; then both models' signals from the warm-up state:
  ``logrank`` (RMS adapter gradient per unit, :class:`~.hydra_rank.signals.SignalCollector`) and
  ``spectral`` (:func:`~.hydra_rank.signals.gradient_spectra`);
* ``fit_probes + test_configs`` budget-feasible rank configurations drawn independently of both
  models (random utilities: a log-normal weight per group times a log-normal one per unit, filled
  greedily); each trains ``probe_steps`` from the warm-up state with the same batches and is
  scored by its validation loss;
* each model is fitted on the first ``fit_probes`` configurations (ridge 1.0, the allocator's
  default, not tuned here) and scored by Spearman between its predicted and the measured
  validation loss on the other ``test_configs``; the unfitted priors (rank by the summed signal
  alone) are scored the same way.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from ..adapters import apply_adapters
from ..adapters.base import adapter_layers
from ..allocators import budget_from_rank
from ..allocators.base import unit_costs
from ..allocators.hydra_rank.signals import SignalCollector, gradient_spectra
from ..allocators.uniform import UniformAllocator
from ..core import perf_model as pm
from ..core.schedule import ranks_to_units
from ..core.units import split_unit
from ..train import TrainConfig, evaluate, train
from ..train.job import make_adapter_config, make_datasets
from . import _markdown
from .ranks import BenchConfig, pretrained_base

__all__ = ["PerfModelBenchConfig", "markdown_table", "run_perf_model_bench", "smoke_config", "write_results"]

logger = logging.getLogger(__name__)


@dataclass
class PerfModelBenchConfig:
    tasks: tuple[str, ...] = ("next-digit", "rotated", "parity")
    seeds: tuple[int, ...] = (0, 1, 2)
    adapters: tuple[str, ...] = ("lora", "hydra")
    warmup_steps: int = 10
    fit_probes: int = 6
    test_configs: int = 10
    probe_steps: int = 8
    batch_size: int = 16
    probe_val: int = 96
    spectrum_batches: int = 4
    lr: float = 3e-3
    ridge: float = 1.0
    final_steps: int = 40
    budget_rank: int = 2
    r_max: int = 8
    train_limit: int | None = None
    pretrain_steps: int = 300
    cache_dir: str = "benchmarks/.cache"


def smoke_config(cache_dir: str) -> PerfModelBenchConfig:
    """Seconds-long: the same code path at tiny sizes."""
    return PerfModelBenchConfig(
        tasks=("parity",),
        seeds=(0,),
        adapters=("lora",),
        warmup_steps=1,
        fit_probes=4,
        test_configs=3,
        probe_steps=1,
        final_steps=1,
        batch_size=8,
        probe_val=16,
        spectrum_batches=1,
        train_limit=48,
        pretrain_steps=2,
        cache_dir=cache_dir,
    )


def _random_configs(
    units: dict[str, dict[str, int]], budget: int, n: int, rng: np.random.Generator
) -> list[dict[str, int]]:
    """``n`` distinct budget-feasible configurations from random utilities (no measured signal)."""
    names = sorted(units)
    configs: list[dict[str, int]] = []
    for _ in range(50 * n):
        if len(configs) == n:
            break
        group_w = {g: float(np.exp(rng.normal(0.0, 1.0))) for g in pm.GROUPS}
        signals = {u: group_w[pm.unit_group(u)[0]] * float(np.exp(rng.normal(0.0, 0.5))) for u in names}
        model = {
            "feature_names": list(pm.FEATURES),
            "weights": [-1.0] * len(pm.GROUPS) + [0.0],
            "intercept": 0.0,
        }
        config = pm.propose_allocation(signals, model, units, budget)
        if config not in configs:
            configs.append(config)
    return configs


def _set_ranks(model: Any, ranks: dict[str, int]) -> None:
    layers = adapter_layers(model)
    for key, r in ranks.items():
        module, slot = split_unit(key)
        layers[module].set_rank(slot, int(r))


def _one(
    config: PerfModelBenchConfig, base: Any, tokenizer: Any, task: str, seed: int, adapter: str
) -> dict[str, Any]:
    train_ds, _ = make_datasets(
        f"digits:{task}", tokenizer, base.config.input_spec, seed, train_limit=config.train_limit
    )
    n_val = min(config.probe_val, max(1, len(train_ds) // 4))
    fit_ds = Subset(train_ds, range(len(train_ds) - n_val))
    val_ds = Subset(train_ds, range(len(train_ds) - n_val, len(train_ds)))
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    apply_adapters(model, make_adapter_config(adapter, config.r_max, None, model.config.default_targets))
    lora = copy.deepcopy(base)
    apply_adapters(lora, make_adapter_config("lora", config.r_max, None, lora.config.default_targets))
    budget = budget_from_rank(lora, config.budget_rank)  # the rank benchmark's budget: LoRA rank budget_rank
    units = {u: {"r_max": r, "params_per_rank": p} for u, (r, p) in unit_costs(model).items()}
    uniform = UniformAllocator().plan(model, fit_ds, val_ds, budget)
    uniform.apply(model, 0)
    collector = SignalCollector()
    train(
        model,
        fit_ds,
        TrainConfig(steps=config.warmup_steps, batch_size=config.batch_size, lr=config.lr, seed=seed),
        callbacks=[collector],
    )
    signals = collector.signals()
    spectra = gradient_spectra(model, fit_ds, config.spectrum_batches, config.batch_size, seed + 7)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng([seed, 11])
    configs = _random_configs(units, budget, config.fit_probes + config.test_configs, rng)

    def val_loss(ranks: dict[str, int], steps: int) -> float:
        model.load_state_dict(state)
        _set_ranks(model, ranks)
        train(
            model, fit_ds, TrainConfig(steps=steps, batch_size=config.batch_size, lr=config.lr, seed=seed + 1)
        )
        return evaluate(model, val_ds, batch_size=len(val_ds)).loss

    losses = [val_loss(ranks, config.probe_steps) for ranks in configs]
    k = config.fit_probes
    fit_c, test_c, fit_y, test_y = configs[:k], configs[k:], losses[:k], losses[k:]
    old = pm.fit_performance_model(fit_c, fit_y, signals, units, ridge=config.ridge)
    new = pm.fit_spectral_model(fit_c, fit_y, spectra, units, ridge=config.ridge)
    start = ranks_to_units(uniform.phases[0].ranks, units)
    shrink = _fit_shrink_model(fit_c, fit_y, start, signals, units, config.ridge)
    prior_old = [-float(pm.features(c, signals, units)[: len(pm.GROUPS)].sum()) for c in test_c]
    prior_new = [-float(pm.spectral_features(c, spectra, units).sum()) for c in test_c]
    chosen = {
        "uniform": ranks_to_units(uniform.phases[0].ranks, units),
        "logrank": pm.propose_allocation(signals, old, units, budget),
        "spectral": pm.propose_allocation(spectra, new, units, budget),
    }
    allocation = (
        {name: round(val_loss(r, config.final_steps), 5) for name, r in chosen.items()}
        if config.final_steps
        else {}
    )
    return {
        "allocation_val_loss": allocation,
        "task": task,
        "seed": seed,
        "adapter": adapter,
        "configs": len(configs),
        "val_loss_range": [round(min(losses), 4), round(max(losses), 4)],
        "spearman_test": {
            "logrank": pm.spearman([pm.predict_loss(old, c, signals, units) for c in test_c], test_y),
            "spectral": pm.spearman([pm.predict_loss(new, c, spectra, units) for c in test_c], test_y),
            "logrank_prior": pm.spearman(prior_old, test_y),
            "spectral_prior": pm.spearman(prior_new, test_y),
            "logrank_shrink": pm.spearman([shrink(c) for c in test_c], test_y),
        },
        "spearman_loo_fit": {"logrank": old["fit"]["spearman_loo"], "spectral": new["fit"]["spearman_loo"]},
        # The raw measurements (first ``fit_probes`` configurations fitted, the rest held out), so
        # another model can be scored on exactly these runs without training again.
        "probes": _probe_record(sorted(units), signals, spectra, configs, losses),
    }


def _probe_record(names, signals, spectra, configs, losses) -> dict[str, Any]:
    """Every probe run's ranks and validation loss, with each unit's signal and spectrum."""
    return {
        "units": names,
        "signals": [round(float(signals.get(u, 0.0)), 6) for u in names],
        "spectra": [[round(float(v), 6) for v in spectra.get(u, ())] for u in names],
        "ranks": [[int(c[u]) for u in names] for c in configs],
        "val_loss": [round(v, 5) for v in losses],
    }


def shrink_feature(
    ranks: dict[str, int], start: dict[str, int], signals: dict[str, float], units: dict[str, Any]
) -> float:
    """The signal-weighted share of the warm-up's trained rank columns that ``ranks`` masks off:
    ``sum_i s_i * max(0, r0_i - r_i) / sum_i s_i * r0_i`` (``r0``: the warm-up's ranks). A probe that
    starts from the warm-up state loses what those columns learned, which ``log(1 + r)`` alone does
    not see."""
    names = sorted(units)
    s = np.array([max(float(signals.get(u, 0.0)), 0.0) for u in names]) + 1e-12
    r0 = np.array([start.get(u, 0) for u in names], dtype=float)
    r = np.array([ranks.get(u, 0) for u in names], dtype=float)
    return float((s * np.clip(r0 - r, 0.0, None)).sum() / max(float((s * r0).sum()), 1e-12))


def _fit_shrink_model(configs, losses, start, signals, units, ridge) -> Callable[[dict[str, int]], float]:
    """The log-rank model with :func:`shrink_feature` as one more feature (prior weight 0; the
    same ridge fit); returns its predictor."""
    def phi(c: dict[str, int]) -> np.ndarray:
        return np.append(pm.features(c, signals, units), shrink_feature(c, start, signals, units))

    core = pm.fit_ridge_with_prior(np.stack([phi(c) for c in configs]), losses, len(pm.GROUPS), ridge)
    weights = np.asarray(core["weights"])
    return lambda c: float(core["intercept"] + weights @ phi(c))


def run_perf_model_bench(
    config: PerfModelBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every task x seed x adapter; the JSON-ready rows and, per adapter and model, the mean
    out-of-sample Spearman with its standard error over rows."""
    start = time.perf_counter()
    base, tokenizer, _, _ = pretrained_base(
        BenchConfig(
            pretrain_steps=config.pretrain_steps, train_limit=config.train_limit, cache_dir=config.cache_dir
        )
    )
    rows = []
    for seed in config.seeds:
        for task in config.tasks:
            for adapter in config.adapters:
                row = _one(config, base, tokenizer, task, seed, adapter)
                rows.append(row)
                msg = (
                    f"{task} seed {seed} {adapter}: "
                    + ", ".join(f"{k} {v:+.2f}" for k, v in row["spearman_test"].items())
                    + (
                        "; val loss "
                        + ", ".join(f"{k} {v:.4f}" for k, v in row["allocation_val_loss"].items())
                    )
                )
                logger.info(msg)
                if progress:
                    progress(msg)
    summary = {}
    for adapter in config.adapters:
        mine = [r for r in rows if r["adapter"] == adapter]
        for name in mine[0]["spearman_test"]:
            values = [
                r["spearman_test"][name] for r in mine if r["spearman_test"][name] == r["spearman_test"][name]
            ]
            se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
            summary[f"{adapter}/{name}"] = {
                "mean": statistics.fmean(values) if values else float("nan"),
                "se": se,
                "rows": len(values),
            }
    return {
        "config": asdict(config),
        "rows": rows,
        "summary": summary,
        "total_seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
    }


def markdown_table(results: dict[str, Any], command: str) -> str:
    """Out-of-sample Spearman per adapter and model (mean ± standard error over task x seed rows),
    and the validation loss of each model's proposed allocation next to uniform's."""
    cfg = results["config"]
    head = ["adapter", "model", "Spearman (held-out configs)", "rows"]
    rows = [
        [k.split("/")[0], k.split("/")[1], f"{v['mean']:+.2f} ± {v['se']:.2f}", str(v["rows"])]
        for k, v in results["summary"].items()
    ]
    lines = _markdown.table(head, rows)
    alloc_head = ["adapter", "allocation", "val loss (mean)", "beats uniform (pairs)"]
    alloc_rows = []
    for adapter in cfg["adapters"]:
        mine = [r for r in results["rows"] if r["adapter"] == adapter and r["allocation_val_loss"]]
        for name in ("uniform", "logrank", "spectral"):
            if not mine:
                continue
            mean = statistics.fmean(r["allocation_val_loss"][name] for r in mine)
            wins = sum(r["allocation_val_loss"][name] < r["allocation_val_loss"]["uniform"] for r in mine)
            alloc_rows.append(
                [adapter, name, f"{mean:.4f}", "-" if name == "uniform" else f"{wins}/{len(mine)}"]
            )
    lines += ["", *_markdown.table(alloc_head, alloc_rows)]
    notes = [
        "",
        f"Command: `{command}`. {results['total_seconds']:.0f} s on {results['threads']} thread(s). Per task x seed x "
        f"adapter: warm-up {cfg['warmup_steps']} steps at uniform rank; {cfg['fit_probes']} fitting + "
        f"{cfg['test_configs']} held-out random configurations, {cfg['probe_steps']} steps each (batch {cfg['batch_size']}, "
        f"lr {cfg['lr']}); validation = the last {cfg['probe_val']} training examples (the eval split is not used); "
        f"ridge {cfg['ridge']}. `*_prior`: the unfitted prior (summed signal) alone. Allocations: each fitted model's "
        f"proposal and uniform, {cfg['final_steps']} steps from the warm-up state.",
    ]
    return "\n".join(lines + notes) + "\n"


def write_results(
    results: dict[str, Any], out_dir: str | Path, command: str, name: str = "perf_model"
) -> tuple[Path, Path]:
    return _markdown.write_results({"command": command, **results}, Path(out_dir), name, lambda r: markdown_table(r, command))
