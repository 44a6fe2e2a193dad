"""``mobile-peft bench memory``: peak memory of a training step, eager PyTorch against the exported
bundles, next to the lower bound each bundle records, and whether it fits each phone's budget.

Per workload (preset, adapter, target set, batch; int8 backbone, rank 8) the model is built once
(seed 0) and exported to ``pte`` and ``onnx`` (:func:`._cache.workload_bundles`, cached in the work
directory :mod:`.speed` shares). Every contender
trains in its own child process, so each peak is its own, in an order rotated per workload:

* ``pte`` / ``onnx``: the bundle in its runtime (:func:`~mobile_peft.runtime.profile.profile_bundle`:
  peak RSS growth over the app's baseline, which already holds the interpreter, numpy and the
  runtime library); ``ratio_to_bound`` is that growth over the manifest's ``memory_bound``;
* ``eager``: the same adapters, precision, inputs and optimiser in PyTorch (``python -m
  mobile_peft.bench.memory``), once per bundle optimiser, in eval mode (no dropout) as the bundles'
  graphs were captured. The model is built in the child first
  (its float weights exist only until quantised), then the baseline is read: its peak growth is
  the steps' growth plus the bytes of the model's tensors (frozen backbone as stored + adapters),
  which is what loading a bundle costs the runtimes. Its bound is the bundle's of the same
  optimiser (same model, batch and activations).

``fits`` per device profile comes from ``mobile-peft profile --emulate`` runs
(:func:`~mobile_peft.runtime.emulate.emulate_bundle`): the bundle trained ``emulate_steps`` steps
in a child held to the phone's app budget and big-core count, and survived. Eager PyTorch does not
ship to phones: its ``fits`` is not run.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._cache import check_target_sets, workload_bundles, workload_model

__all__ = ["MemoryBenchConfig", "memory_markdown", "run_memory_bench", "write_memory"]

PHONES = ("galaxy-a14", "iphone-12", "pixel-7", "iphone-15-pro", "pixel-8-pro")


@dataclass
class MemoryBenchConfig:
    presets: tuple[str, ...] = ("tiny",)
    adapters: tuple[str, ...] = ("lora", "hydra")
    targets: tuple[str, ...] = ("default", "language+projector")
    batches: tuple[int, ...] = (1, 8)
    max_batch: dict[str, int] = field(default_factory=lambda: {"smolvlm-256m": 1})  # the workloads
    formats: tuple[str, ...] = ("pte", "onnx")
    devices: tuple[str, ...] = PHONES
    quant: str = "int8"
    rank: int = 8
    steps: int = 5
    emulate_steps: int = 2
    threads: int = 2
    work_dir: str = "benchmarks/.cache/workloads"


def _eager(config: MemoryBenchConfig, preset: str, adapter: str, targets: str, bundle: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mobile-peft-memory-") as tmp:
        out = Path(tmp) / "eager.json"
        cmd = [sys.executable, "-m", "mobile_peft.bench.memory", "--preset", preset, "--adapter", adapter,
               "--targets", targets, "--bundle", str(bundle), "--quant", config.quant, "--rank", str(config.rank),
               "--steps", str(config.steps), "--threads", str(config.threads), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            from ..core.errors import MobilePeftError

            raise MobilePeftError(f"the eager memory child failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def _fits(config: MemoryBenchConfig, path: Path) -> dict[str, dict[str, Any]]:
    from ..runtime.emulate import emulate_bundle

    out = {}
    for device in config.devices:
        r = emulate_bundle(path, device, steps=config.emulate_steps)
        out[device] = {"budget_bytes": r["budget_bytes"], "fits": r["fits"], "peak_growth_bytes": r["peak_growth_bytes"],
                       "threads": r["threads"], "limiter": r["limiter"], "failure": r.get("failure")}
    return out


def _workload(config: MemoryBenchConfig, preset: str, adapter: str, targets: str, batch: int,
              turn: int) -> list[dict[str, Any]]:
    from ..runtime.bundle import Bundle
    from ..runtime.profile import profile_bundle, ratio_to_bound

    paths = workload_bundles(config.work_dir, preset, adapter, targets, config.quant, config.rank, batch,
                             config.formats)
    bundles = {fmt: Bundle.open(path) for fmt, path in paths.items()}
    optimizers = {fmt: b.optimizer["name"] for fmt, b in bundles.items()}
    contenders = [*paths, *(f"eager-{name}" for name in sorted(set(optimizers.values())))]
    contenders = contenders[turn % len(contenders):] + contenders[: turn % len(contenders)]
    base = {"preset": preset, "adapter": adapter, "targets": targets, "batch": batch}
    rows = {}
    for name in contenders:
        if name in paths:
            report = profile_bundle(bundles[name], "host", config.steps)
            bound = bundles[name].manifest.memory_bound
            rows[name] = {**base, "format": name, "optimizer": optimizers[name],
                          "peak_growth_bytes": report["peak_growth_bytes"], "lower_bound_bytes": bound["total_bytes"],
                          "ratio_to_bound": report["ratio_to_bound"], "lower_bound": bound,
                          "devices": _fits(config, paths[name])}
        else:
            optimizer = name.removeprefix("eager-")
            fmt = next(f for f, o in optimizers.items() if o == optimizer)
            bound = bundles[fmt].manifest.memory_bound
            measured = _eager(config, preset, adapter, targets, paths[fmt])
            rows[name] = {**base, "format": "eager", "optimizer": optimizer, **measured,
                          "lower_bound_bytes": bound["total_bytes"],
                          "ratio_to_bound": ratio_to_bound(measured["peak_growth_bytes"], bound), "lower_bound": bound,
                          "devices": {d: {"budget_bytes": None, "fits": None} for d in config.devices}}
    order = [name for fmt in paths for name in (f"eager-{optimizers[fmt]}", fmt)]  # each bundle after its eager
    return [rows[name] for name in dict.fromkeys(order)]


def run_memory_bench(
    config: MemoryBenchConfig,
    progress: Callable[[str], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every workload of ``config``; ``checkpoint`` gets the results so far (``complete`` false)
    after each workload, so a long run that is stopped keeps what it measured."""
    from ..core.errors import ConfigError
    from ..runtime.devices import get_device
    from ..runtime.profile import TRAINED_FORMATS

    check_target_sets(config.targets)
    unknown = sorted(set(config.formats) - set(TRAINED_FORMATS))
    if unknown:
        raise ConfigError(f"the memory benchmark measures the trained formats {list(TRAINED_FORMATS)}, not {unknown}.")
    start = time.perf_counter()
    budgets = {d: get_device(d).app_budget_bytes for d in config.devices}
    machine = {"cpus": config.threads, "platform": platform.platform(), "processor": platform.processor()}
    rows: list[dict[str, Any]] = []

    def results(complete: bool) -> dict[str, Any]:
        return {"config": asdict(config), "machine": machine, "complete": complete, "rows": rows,
                "seconds": round(time.perf_counter() - start, 1)}

    turn = 0
    for preset in config.presets:
        for adapter in config.adapters:
            for targets in config.targets:
                for batch in (b for b in config.batches if b <= config.max_batch.get(preset, b)):
                    if progress:
                        progress(f"memory: {preset} {adapter} {targets} batch {batch}")
                    new = _workload(config, preset, adapter, targets, batch, turn)
                    for row in new:  # eager rows: the budget for reference, fits not run
                        for device, entry in row["devices"].items():
                            entry["budget_bytes"] = budgets[device]
                    rows += new
                    turn += 1
                    if checkpoint:
                        checkpoint(results(complete=False))
    return results(complete=True)


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f}"


def memory_markdown(results: dict[str, Any]) -> str:
    from . import _markdown

    devices = list(results["config"]["devices"])
    head = ["preset", "adapter", "targets", "batch", "format (optimizer)", "peak growth MiB", "lower bound MiB",
            "× bound", *devices]
    body = []
    for r in results["rows"]:
        fits = ["–" if r["devices"][d]["fits"] is None else ("fits" if r["devices"][d]["fits"] else "**no**") for d in devices]
        body.append([r["preset"], r["adapter"], r["targets"], str(r["batch"]), f"{r['format']} ({r['optimizer']})",
                     _mib(r["peak_growth_bytes"]), _mib(r["lower_bound_bytes"]),
                     "–" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.2f}", *fits])
    terms_head = ["preset", "adapter", "targets", "batch", "optimizer", "backbone MiB", "trainable × (1+1+states) MiB",
                  "activations MiB", "bound MiB"]
    seen, terms = set(), []
    for r in results["rows"]:
        b = r["lower_bound"]
        key = (r["preset"], r["adapter"], r["targets"], r["batch"], r["optimizer"])
        if key in seen:
            continue
        seen.add(key)
        kept = b["trainable_bytes"] + b["gradient_bytes"] + b["optimizer_state_bytes"]
        terms.append([*map(str, key), _mib(b["backbone_bytes"]),
                      f"{_mib(b['trainable_bytes'])} × (1+1+{b['optimizer_states']}) = {_mib(kept)}",
                      _mib(b["activation_bytes"]), _mib(b["total_bytes"])])
    config, machine = results["config"], results["machine"]
    budgets = ", ".join(f"{d} {_mib(results['rows'][0]['devices'][d]['budget_bytes'])} MiB" for d in devices) if results["rows"] else ""
    note = (f"`mobile-peft bench memory` on {machine['platform']}, {config['threads']} threads; peak growth over "
            f"{config['steps']} steps, each contender in its own process; fits: the bundle survived "
            f"{config['emulate_steps']} steps held to the device's app budget ({budgets}) and big cores "
            f"(`mobile-peft profile --emulate`). {results['seconds']:.0f} s"
            + ("." if results.get("complete", True) else ", partial: the run was stopped before every workload ran."))
    return "\n".join([note, "", *_markdown.table(head, body), "", "Lower bound by term:", "",
                      *_markdown.table(terms_head, terms)])


def write_memory(results: dict[str, Any], out: Path, name: str = "memory") -> tuple[Path, Path]:
    from . import _markdown

    return _markdown.write_results(results, out, name, memory_markdown)


# -- the eager child ---------------------------------------------------------------------------------
def _tensor_bytes(model: Any) -> int:
    """Bytes of the unique storages of ``model``'s parameters and buffers."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values())


def _eager_child(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobile_peft.bench.memory", description="One eager contender's peak.")
    for name in ("--preset", "--adapter", "--targets", "--quant"):
        p.add_argument(name, required=True)
    p.add_argument("--bundle", type=Path, required=True, help="The bundle whose inputs and optimiser to use.")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from ..core.datasets import load_dataset
    from ..runtime._profile_worker import _reset_peak, _status_bytes
    from ..runtime.bundle import Bundle
    from ..train.trainer import select_trainable

    torch.set_num_threads(args.threads)
    bundle = Bundle.open(args.bundle)
    arrays = bundle.encoder().batch(load_dataset("digits", "train", limit=bundle.batch_size))
    model, _ = workload_model(args.preset, args.adapter, args.targets, args.quant, args.rank)
    params = list(select_trainable(model, full=False).values())
    pixels, ids, labels = (torch.from_numpy(x) for x in arrays)
    opt = bundle.optimizer
    gc.collect()
    baseline = _status_bytes("VmRSS")
    peak_reset = _reset_peak()
    optimizer = (torch.optim.SGD(params, lr=opt["lr"], momentum=float(opt.get("momentum") or 0)) if opt["name"] == "sgd"
                 else torch.optim.AdamW(params, lr=opt["lr"], weight_decay=float(opt.get("weight_decay") or 0)))
    rss = []
    for _ in range(args.steps):
        loss = model(pixels, ids, labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rss.append(_status_bytes("VmRSS"))
    step_growth = (_status_bytes("VmHWM") if peak_reset else max(rss)) - baseline
    model_bytes = _tensor_bytes(model)
    args.out.write_text(json.dumps({"peak_growth_bytes": step_growth + model_bytes, "step_growth_bytes": step_growth,
                                    "model_bytes": model_bytes, "baseline_rss_bytes": baseline}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_eager_child())
