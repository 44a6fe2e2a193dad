"""``mobile-peft bench levers``: what each export lever buys the ``pte`` training step, before and
after, side by side in one run, with the per-op profile that says where the time goes.

One workload (preset, adapter, batch; int8 backbone, rank 8, default targets) is built once
(seed 0) and exported once per variant of the ExecuTorch export:

* ``portable``: no XNNPACK delegation, the graph as traced (every op in ExecuTorch's kernels);
* ``xnnpack``: the matrix multiplies delegated to XNNPACK, the graph as traced (the "before");
* ``xnnpack+rewrites``: the same plus the value-preserving graph rewrites of
  :func:`export.pte.simplify` (a patch convolution as a matmul among them);
* ``xnnpack+rewrites+transpose,bmm``: the same with the transposes and attention's batched
  matmuls delegated to XNNPACK too;
* ``…+order``: the same, with delegate fusion keeping the traced node order instead of
  ExecuTorch's breadth-first one (:func:`export._fuse.topological_order`);
* ``…+order+recompute``: the same with frozen weights' dequantisation recomputed in the backward
  where that lowers the peak (:func:`export.pte.recompute_frozen`);
* ``…+softmax,gelu``: the same with softmax, the exact GELU, tanh and sigmoid delegated to
  XNNPACK too (:data:`export.pte.XNNPACK_OPS`): the default export;
* ``…+activations``: the default with cheap activations (attention's softmax above all) recomputed
  in the backward from values it still holds (:func:`export.pte.recompute_activations`; off by
  default: memory for step time);
* ``xnnpack+rewrites+transpose+order+recompute``: the default without the batched matmuls
  (:data:`export.pte.TRANSPOSE_OPS`), the default of the previous levers run: delegated together
  with the transposes they enlarged the planned arena until the partitioner stopped joining
  partitions far back (``export._partition._MAX_GAP``).

The order, recompute and batched-matmul choices are memory levers: each row also carries the
training method's planned arena.
"""

from __future__ import annotations

import collections
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..export.pte import BMM_OPS, MATMUL_OPS, TRANSPOSE_OPS, PteOptions
from ._cache import bundle_path, is_exported
from .speed import _bundle_step, _eager_step, _stats, alternate, machine_info

__all__ = ["LeverBenchConfig", "VARIANTS", "levers_markdown", "op_profile", "run_lever_bench", "write_levers"]

# variant -> how the ExecuTorch program is built
VARIANTS: dict[str, PteOptions] = {
    "portable": PteOptions(xnnpack=False, rewrites=False, recompute_frozen=False, keep_order=False),
    "xnnpack": PteOptions(xnnpack_ops=MATMUL_OPS, rewrites=False, recompute_frozen=False, keep_order=False),
    "xnnpack+rewrites": PteOptions(xnnpack_ops=MATMUL_OPS, recompute_frozen=False, keep_order=False),
    "xnnpack+rewrites+transpose,bmm": PteOptions(xnnpack_ops=BMM_OPS, recompute_frozen=False, keep_order=False),
    "xnnpack+rewrites+transpose,bmm+order": PteOptions(xnnpack_ops=BMM_OPS, recompute_frozen=False),
    "xnnpack+rewrites+transpose,bmm+order+recompute": PteOptions(xnnpack_ops=BMM_OPS),
    "xnnpack+rewrites+transpose,bmm+order+recompute+softmax,gelu": PteOptions(),  # the default export
    "xnnpack+rewrites+transpose,bmm+order+recompute+softmax,gelu+activations": PteOptions(recompute_activations=True),
    "xnnpack+rewrites+transpose+order+recompute": PteOptions(xnnpack_ops=TRANSPOSE_OPS),  # no bmm
}
# ETDump events that contain other events (not kernels).
_ENVELOPES = {"Method::execute": "method_ms", "OPERATOR_CALL": "kernels_ms", "DELEGATE_CALL": "delegates_ms"}


@dataclass
class LeverBenchConfig:
    preset: str = "tiny"
    adapter: str = "lora"
    batch: int = 8
    quant: str = "int8"
    rank: int = 8
    variants: tuple[str, ...] = tuple(VARIANTS)
    steps: int = 12
    warmup: int = 2
    profile_steps: int = 5
    top_ops: int = 12
    threads: int = 2
    work_dir: str = "benchmarks/.cache/levers"


def op_profile(path: Path, inputs: list, steps: int, warmup: int = 1) -> dict[str, Any]:
    """ETDump profile of ``steps`` training steps of the ``pte`` bundle at ``path``: per kernel
    (event name) milliseconds and calls per step, plus the method, kernel and delegate totals."""
    import numpy as np
    import torch
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from ..core.contract import MethodKey
    from ..runtime.bundle import Bundle

    bundle = Bundle.open(path)
    methods = bundle.methods
    module = _load_for_executorch(
        str(bundle.file(methods[MethodKey.PROGRAM])), str(bundle.file(methods[MethodKey.TRAINABLE_DATA])),
        enable_etdump=True,
    )
    method = methods[MethodKey.TRAIN][MethodKey.METHOD]
    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    runs = warmup + steps
    for _ in range(runs):
        module.run_method(method, tensors, clone_outputs=False)
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "profile.etdp"
        module.write_etdump_result_to_file(str(etdump))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from executorch.devtools import Inspector

            frame = Inspector(etdump_path=str(etdump)).to_dataframe()
    total: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    delegated: dict[str, bool] = {}
    for _, event in frame.iterrows():
        if event["event_block_name"] != "Execute":
            continue
        name = event["event_name"]
        total[name] += float(sum(event["raw"]))  # milliseconds, every recorded run
        calls[name] += len(event["raw"])
        delegated[name] = bool(event["is_delegated_op"])
    out: dict[str, Any] = {"steps": runs}
    for name, key in _ENVELOPES.items():
        out[key] = round(total.pop(name, 0.0) / runs, 3)
    out["ops"] = [
        {"op": name, "ms_per_step": round(ms / runs, 3), "calls_per_step": calls[name] // runs,
         "delegated": delegated[name]}
        for name, ms in total.most_common()
    ]
    return out


def _export(config: LeverBenchConfig, model: Any, tokenizer: Any, variant: str) -> Path:
    from ..export import export_bundle

    stem = f"{config.preset}-{config.quant}-{config.adapter}-r{config.rank}-b{config.batch}-{variant.replace(',', '-')}"
    path = bundle_path(config.work_dir, stem, "pte", VARIANTS[variant])
    if not is_exported(path):
        start = time.perf_counter()
        export_bundle((model, tokenizer), "pte", path, batch_size=config.batch, seed=0, pte_options=VARIANTS[variant])
        (path / "export_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return path


def run_lever_bench(config: LeverBenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    import torch

    from ..adapters import apply_adapters
    from ..core.datasets import load_dataset
    from ..models import build_model
    from ..runtime.bundle import Bundle
    from ..runtime.profile import planned_memory
    from ..train.job import make_adapter_config

    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        from ..core.errors import ConfigError

        raise ConfigError(f"unknown lever variant(s) {unknown}; expected some of {list(VARIANTS)}.")
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    model, tokenizer = build_model(config.preset, quant=config.quant, seed=0)
    apply_adapters(model, make_adapter_config(config.adapter, config.rank, None, model.config.default_targets))
    paths = {}
    for variant in config.variants:
        if progress:
            progress(f"levers: exporting {config.preset} {config.adapter} batch {config.batch} ({variant})")
        paths[variant] = _export(config, model, tokenizer, variant)
    bundle = Bundle.open(next(iter(paths.values())))
    arrays = bundle.encoder().batch(load_dataset("digits:parity", "train", limit=config.batch))
    contenders: dict[str, Callable[[], None]] = {}
    for variant, path in paths.items():
        contenders[variant], optimizer = _bundle_step(path, arrays)
    contenders["eager"] = _eager_step(model, arrays, "sgd", optimizer["lr"])
    if progress:
        progress(f"levers: timing {len(contenders)} contenders, {config.steps} alternating rounds")
    times = alternate(contenders, config.warmup, config.steps)
    eager = _stats(times["eager"])
    masks = bundle.schedule.phase_masks(0)
    rows = []
    for variant, path in paths.items():
        if progress:
            progress(f"levers: profiling {variant}")
        s = _stats(times[variant])
        profile = op_profile(path, [*arrays, *masks], config.profile_steps)
        rows.append({
            "preset": config.preset, "adapter": config.adapter, "batch": config.batch, "variant": variant,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(VARIANTS[variant]).items()},
            "export_s": float((path / "export_seconds.txt").read_text()),
            "train_arena_bytes": planned_memory(Bundle.open(path))["train_arena_bytes"],
            "step_ms": s["median"], "step_iqr_ms": [s["q1"], s["q3"]], "eager_ms": eager["median"],
            "eager_iqr_ms": [eager["q1"], eager["q3"]], "ratio_vs_eager": round(s["median"] / eager["median"], 3),
            "profile": {**profile, "ops": profile["ops"][: config.top_ops]},
        })
    return {"config": asdict(config), "machine": machine_info(), "rows": rows,
            "seconds": round(time.perf_counter() - start, 1)}


def levers_markdown(results: dict[str, Any]) -> str:
    from . import _markdown

    cfg = results["config"]
    head = ["variant", "export s", "step ms", "× eager", "arena MiB", "in kernels ms", "in XNNPACK ms", "top kernels (ms/step, calls)"]
    body = []
    for r in results["rows"]:
        p = r["profile"]
        top = ", ".join(f"{o['op'].removeprefix('native_call_')} {o['ms_per_step']:.1f} ({o['calls_per_step']})"
                        for o in p["ops"] if not o["delegated"])
        body.append([r["variant"], f"{r['export_s']:.0f}",
                     f"{r['step_ms']:.1f} [{r['step_iqr_ms'][0]:.1f}–{r['step_iqr_ms'][1]:.1f}]",
                     f"{r['ratio_vs_eager']:.2f}", f"{r['train_arena_bytes'] / 2**20:.1f}", f"{p['kernels_ms']:.1f}", f"{p['delegates_ms']:.1f}", top])
    eager = results["rows"][0]
    machine = results["machine"]
    note = (f"`mobile-peft bench levers`: {cfg['preset']} {cfg['adapter']} r{cfg['rank']}, {cfg['quant']} backbone, batch "
            f"{cfg['batch']}, {machine['cpus']} threads on {machine['platform']}. Eager PyTorch (SGD) "
            f"{eager['eager_ms']:.1f} ms [{eager['eager_iqr_ms'][0]:.1f}–{eager['eager_iqr_ms'][1]:.1f}]; median of "
            f"{cfg['steps']} alternating rounds after {cfg['warmup']} warm-up, [interquartile range]. Kernel columns: "
            f"ETDump over {cfg['profile_steps']} profiled steps (ExecuTorch's own kernels vs XNNPACK delegate calls).")
    return "\n".join([note, "", *_markdown.table(head, body)])


def write_levers(results: dict[str, Any], out: Path, name: str = "levers") -> tuple[Path, Path]:
    from . import _markdown

    return _markdown.write_results(results, out, name, levers_markdown)
