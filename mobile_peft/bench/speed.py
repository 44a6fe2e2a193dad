"""``mobile-peft bench speed``: a training step of the exported bundles against eager PyTorch,
side by side in one process.

Per workload (preset, adapter, target set, batch; int8 backbone, LoRA/Hydra rank 8; target sets
:data:`._cache.TARGET_SETS`: the model's default targets, or the language model and projector only)
the model is built once (seed 0), exported to ``pte`` and ``onnx`` (:func:`._cache.workload_bundles`,
cached in the work directory :mod:`.memory` shares), and four contenders
train on the very same encoded batch: the ``pte`` bundle in the ExecuTorch runtime (its SGD),
the ``onnx`` bundle in ONNX Runtime training (its AdamW), and eager PyTorch with the same
adapters, precision and inputs, once with SGD and once with AdamW (each bundle is compared with
the eager step of its own optimiser). After ``warmup`` rounds, ``steps`` rounds run every
contender once each, in an order rotated every round, so drift on the machine hits all alike;
a row reports the median step and the interquartile range.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["SpeedBenchConfig", "run_speed_bench", "speed_markdown", "write_speed"]


@dataclass
class SpeedBenchConfig:
    presets: tuple[str, ...] = ("tiny",)
    adapters: tuple[str, ...] = ("lora", "hydra")
    targets: tuple[str, ...] = ("default",)
    batches: tuple[int, ...] = (1, 8)
    formats: tuple[str, ...] = ("pte", "onnx")
    quant: str = "int8"
    rank: int = 8
    steps: int = 12
    warmup: int = 2
    threads: int = 2
    work_dir: str = "benchmarks/.cache/workloads"


def _eager_step(model: Any, inputs: tuple, optimizer_name: str, lr: float) -> Callable[[], None]:
    import torch

    from ..train.trainer import select_trainable

    eager = copy.deepcopy(model).train()
    params = list(select_trainable(eager, full=False).values())
    optimizer = torch.optim.SGD(params, lr=lr) if optimizer_name == "sgd" else torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    pixels, ids, labels = (torch.from_numpy(x) for x in inputs)

    def step() -> None:
        loss = eager(pixels, ids, labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _bundle_step(path: Path, batch_arrays: tuple) -> tuple[Callable[[], None], dict[str, Any]]:
    from ..runtime.bundle import Bundle
    from ..runtime.engine import make_engine

    bundle = Bundle.open(path)
    engine = make_engine(bundle)
    inputs = [*batch_arrays, *bundle.schedule.phase_masks(0)]

    def step() -> None:
        engine.forward_backward(inputs)
        engine.step()

    return step, bundle.optimizer


def alternate(contenders: dict[str, Callable[[], None]], warmup: int, steps: int) -> dict[str, list[float]]:
    """Milliseconds per call of each contender: ``warmup`` rounds, then ``steps`` timed rounds that
    call every contender once, in an order rotated every round (drift hits all alike)."""
    order = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in order}
    for round_ in range(warmup + steps):
        for name in order[round_ % len(order):] + order[: round_ % len(order)]:
            start = time.perf_counter()
            contenders[name]()
            if round_ >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def _stats(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median": round(statistics.median(ms), 3), "q1": round(q[0], 3), "q3": round(q[2], 3)}


def _workload(config: SpeedBenchConfig, preset: str, adapter: str, targets: str, batch: int) -> list[dict[str, Any]]:
    from ..core.datasets import load_dataset
    from ..runtime.bundle import Bundle
    from ._cache import export_seconds, workload_bundles, workload_model

    built = workload_model(preset, adapter, targets, config.quant, config.rank)
    paths = workload_bundles(config.work_dir, preset, adapter, targets, config.quant, config.rank, batch,
                             config.formats, model=built)
    model = built[0]
    encoder = Bundle.open(next(iter(paths.values()))).encoder()
    arrays = encoder.batch(load_dataset("digits:parity", "train", limit=batch))
    contenders: dict[str, Callable[[], None]] = {}
    optimizers: dict[str, dict[str, Any]] = {}
    for fmt, path in paths.items():
        contenders[fmt], optimizers[fmt] = _bundle_step(path, arrays)
    for name in sorted({o["name"] for o in optimizers.values()}):
        lr = next(o["lr"] for o in optimizers.values() if o["name"] == name)
        contenders[f"eager-{name}"] = _eager_step(model, arrays, name, lr)
    times = alternate(contenders, config.warmup, config.steps)
    rows = []
    for fmt in paths:
        eager_name = f"eager-{optimizers[fmt]['name']}"
        s, e = _stats(times[fmt]), _stats(times[eager_name])
        rows.append({"preset": preset, "adapter": adapter, "targets": targets, "format": fmt, "batch": batch,
                     "optimizer": optimizers[fmt]["name"], "eager_ms": e["median"], "eager_iqr_ms": [e["q1"], e["q3"]],
                     "step_ms": s["median"], "step_iqr_ms": [s["q1"], s["q3"]],
                     "ratio_vs_eager": round(s["median"] / e["median"], 3), "steps": config.steps,
                     "export_s": export_seconds(paths[fmt])})
    return rows


def run_speed_bench(config: SpeedBenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    import torch

    from ._cache import check_target_sets

    check_target_sets(config.targets)
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    rows = []
    for preset in config.presets:
        for adapter in config.adapters:
            for targets in config.targets:
                for batch in config.batches:
                    if progress:
                        progress(f"speed: {preset} {adapter} {targets} batch {batch}")
                    rows += _workload(config, preset, adapter, targets, batch)
    return {"config": asdict(config), "machine": machine_info(), "rows": rows, "seconds": round(time.perf_counter() - start, 1)}


def machine_info() -> dict[str, Any]:
    """Where a timing ran: torch threads, platform, processor, torch version."""
    import torch

    return {"cpus": torch.get_num_threads(), "platform": platform.platform(), "processor": platform.processor(),
            "torch": torch.__version__}


def speed_markdown(results: dict[str, Any]) -> str:
    from . import _markdown

    header = ["preset", "adapter", "targets", "batch", "format (optimizer)", "eager ms", "bundle ms", "× eager", "export s"]
    body = [[r["preset"], r["adapter"], r["targets"], str(r["batch"]), f"{r['format']} ({r['optimizer']})",
             f"{r['eager_ms']:.1f} [{r['eager_iqr_ms'][0]:.1f}–{r['eager_iqr_ms'][1]:.1f}]",
             f"{r['step_ms']:.1f} [{r['step_iqr_ms'][0]:.1f}–{r['step_iqr_ms'][1]:.1f}]", f"{r['ratio_vs_eager']:.2f}",
             "–" if r.get("export_s") is None else f"{r['export_s']:.0f}"]
            for r in results["rows"]]
    machine = results["machine"]
    note = (f"`mobile-peft bench speed`, {machine['cpus']} torch threads on {machine['platform']}; median step of "
            f"{results['config']['steps']} alternating rounds after {results['config']['warmup']} warm-up, [interquartile range]; "
            f"export s: the export that made the bundle (this run's or the cached one's; –: not timed).")
    return "\n".join([note, "", *_markdown.table(header, body)])


def write_speed(results: dict[str, Any], out: Path, name: str = "speed") -> tuple[Path, Path]:
    from . import _markdown

    return _markdown.write_results(results, out, name, speed_markdown)
