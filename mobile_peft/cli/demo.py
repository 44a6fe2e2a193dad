"""``mobile-peft demo``: the main job end to end on the embedded default (tiny preset, digits).

1. build ``tiny`` (random weights) and pre-train its base on one digits task (``digit-name``);
2. measure what quantising the frozen backbone costs (eval loss fp32 vs int8 vs int4);
3. freeze + quantise the base (int8), add adapters, fine-tune on a second task (``next-digit``,
   a new label mapping) and report accuracy before/after, trainable parameters, backbone bytes;
4. save the base, the adapter and a loss-curve PNG under ``--out``;
5. export the fine-tuned model as ExecuTorch (``pte``) and ONNX Runtime (``onnx``) training
   bundles, then train the ``pte`` bundle on a third task (``parity``) the way a phone does
   (``mobile_peft.runtime``: no authoring layer, no autograd) and profile it against phones.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import contract
from ..core.errors import ConfigError

if TYPE_CHECKING:
    import torch

from ._ui import StepProgress, console, err_console, human_bytes, print_json, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Pre-train tiny on digits, quantise, fine-tune adapters on a new task.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="Output directory.")
    p.add_argument("--base-task", default="digit-name", help="Digits task the base is pre-trained on.")
    p.add_argument("--task", default="next-digit", help="Digits task the adapters learn.")
    p.add_argument("--adapter", choices=contract.ADAPTER_METHODS, default="lora")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--quant", choices=[m for m in contract.QUANT_MODES if m != "none"], default="int8")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=150, help="Adapter fine-tuning steps.")
    p.add_argument("--device-task", default="parity", help="Digits task the exported bundle learns on device.")
    p.add_argument("--device-steps", type=int, default=30, help="On-device training steps of the exported bundle.")
    p.add_argument("--skip-export", action="store_true", help="Stop after eager fine-tuning (no bundles, no on-device run).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.set_defaults(run=run)


def _quantisation_quality(base: torch.nn.Module, eval_ds: Any) -> list[dict[str, Any]]:
    from ..quant import QUANT_MODES, quantize_model
    from ..train import evaluate
    from ..train.job import frozen_bytes

    rows = []
    for mode in QUANT_MODES:
        model = copy.deepcopy(base)
        quantize_model(model, mode)
        result = evaluate(model, eval_ds)
        rows.append({"quant": mode, "eval_loss": result.loss, "accuracy": result.accuracy, **frozen_bytes(model).as_dict()})
    return rows


# What a demo run writes under --out: a directory holding a summary.json of an earlier demo run is
# the demo's own, and these entries of it are replaced; any other non-empty directory is refused.
_DEMO_OUTPUTS = ("base", "adapter", "bundles", "on_device", "loss_curve.png", "summary.json")


def _clear_previous_demo(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the demo writes a directory there. Choose another --out.")
    if not any(out.iterdir()):
        return
    if not (out / "summary.json").is_file():
        raise ConfigError(
            f"--out {out} is a non-empty directory that is not an earlier demo's output (no summary.json); "
            "choose a new --out or delete it."
        )
    for name in _DEMO_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from ..adapters import save_adapter
    from ..models import build_model, save_model
    from ..quant import quantize_model
    from ..train import TrainConfig, train
    from ..train.job import finetune, make_adapter_config, make_datasets
    from .plots import plot_losses

    start = time.perf_counter()
    out: Path = args.out
    _clear_previous_demo(out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_model("tiny", seed=args.seed)
    spec = model.config.input_spec

    base_train, base_eval = make_datasets(f"digits:{args.base_task}", tokenizer, spec, args.seed)
    pre = TrainConfig(steps=args.pretrain_steps, lr=1e-3, batch_size=32, full=True, seed=args.seed)
    with StepProgress(f"pre-training base on {args.base_task}", pre.steps, enabled=not args.json) as progress:
        pretrain = train(model, base_train, pre, callbacks=[progress])
    save_model(model, tokenizer, out / "base")
    quality = _quantisation_quality(model, base_eval)

    quantize_model(model, args.quant)
    model.config.quant = args.quant
    task_train, task_eval = make_datasets(f"digits:{args.task}", tokenizer, spec, args.seed)
    adapter_config = make_adapter_config(args.adapter, args.rank, None, model.config.default_targets)
    tune = TrainConfig(steps=args.steps, lr=3e-3, batch_size=32, seed=args.seed)
    with StepProgress(f"fine-tuning {args.adapter} on {args.task}", tune.steps, enabled=not args.json) as progress:
        report = finetune(model, task_train, task_eval, tune, adapter_config, callbacks=[progress])
    save_adapter(model, out / "adapter")
    plot = plot_losses(
        {f"pre-training ({args.base_task}, full)": pretrain.losses, f"{args.adapter} fine-tuning ({args.task}, {args.quant})": report.train.losses},
        out / "loss_curve.png",
        title="mobile-peft demo: tiny preset on handwritten digits",
    )
    fp32 = next(r for r in quality if r["quant"] == "none")
    on_device: dict[str, Any] = {}
    if not args.skip_export:
        from mobile_peft.export import export_demo_bundles
        from mobile_peft.runtime import runtime_demo

        with err_console.status("exporting pte and onnx training bundles"):
            bundles = export_demo_bundles(model, tokenizer, out / "bundles")
        on_device["bundles"] = bundles
        pte = bundles.get("pte", {})
        if "path" in pte:
            with err_console.status(f"training the pte bundle on device-style ({args.device_steps} steps) and profiling it"):
                on_device["runtime"] = runtime_demo(
                    pte["path"], out / "on_device", steps=args.device_steps, data=f"digits:{args.device_task}",
                    devices=("host", "galaxy-a14", "iphone-12", "pixel-7"),
                )
    summary = {
        "base_task": args.base_task,
        "base_accuracy": fp32["accuracy"],
        "task": args.task,
        "adapter": args.adapter,
        "rank": args.rank,
        "backbone_quant": args.quant,
        **report.as_dict(),
        "backbone_fp32_linear_weight_bytes": fp32["linear_weight_bytes"],
        "quantisation_quality": quality,
        "loss_curve": str(plot),
        "adapter_dir": str(out / "adapter"),
        **on_device,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args: argparse.Namespace) -> int:
    summary = run_demo(args)
    if args.json:
        print_json(summary)
        return 0
    quality = summary["quantisation_quality"]
    fp32_linear = summary["backbone_fp32_linear_weight_bytes"]
    console.print(
        table(
            "frozen base: quantisation cost (eval on " + summary["base_task"] + ")",
            ["backbone", "eval loss", "accuracy", "linear weights", "vs fp32", "all frozen bytes"],
            [
                (r["quant"], r["eval_loss"], r["accuracy"], human_bytes(r["linear_weight_bytes"]), f"{r['linear_weight_bytes'] / fp32_linear:.3f}x", human_bytes(r["total_bytes"]))
                for r in quality
            ],
        )
    )
    console.print(
        table(
            f"adapters on a new task ({summary['task']})",
            ["", "value"],
            [
                ("adapter", f"{summary['adapter']} r={summary['rank']} on {summary['adapted_modules']} modules"),
                ("backbone", f"{summary['backbone_quant']}, {human_bytes(summary['backbone_total_bytes'])}"),
                ("trainable parameters", summary["trainable_params"]),
                ("accuracy before", summary["accuracy_before"]),
                ("accuracy after", summary["accuracy_after"]),
                ("fine-tuning time", f"{summary['train_seconds']} s for {summary['steps']} steps"),
                ("loss curve", summary["loss_curve"]),
            ],
        )
    )
    _print_on_device(summary)
    console.print(f"total wall time: {summary['wall_seconds']} s")
    return 0


def _print_on_device(summary: dict[str, Any]) -> None:
    bundles = summary.get("bundles")
    if not bundles:
        return
    console.print(
        table(
            "trainable bundles",
            ["format", "size", "export time", "path"],
            [(fmt, human_bytes(b["bytes"]), f"{b['seconds']} s", b["path"]) if "path" in b else (fmt, "skipped", "", b["skipped"]) for fmt, b in bundles.items()],
        )
    )
    runtime = summary.get("runtime")
    if not runtime:
        return
    losses = runtime["losses"]
    console.print(
        table(
            f"on-device training of the pte bundle ({len(losses)} steps, mobile_peft.runtime)",
            ["", "value"],
            [
                ("loss first -> last", f"{losses[0]:.4f} -> {losses[-1]:.4f}"),
                ("accuracy before", runtime["accuracy_before"]),
                ("accuracy after", runtime["accuracy_after"]),
                ("personal adapter", runtime["adapter_dir"]),
            ],
        )
    )
    console.print(
        table(
            "memory profile (measured peak RSS growth of training steps vs the device's app budget)",
            ["device", "app budget", "peak growth", "planned", "step", "fits", "max batch"],
            [
                (r["device"], human_bytes(r["budget_bytes"]), human_bytes(r["peak_growth_bytes"]),
                 human_bytes(r["planned_total_bytes"]) if r["planned_total_bytes"] else "-", f"{r['step_ms']} ms ({r['threads']} thr)",
                 "yes" if r["fits"] else "NO", r["max_batch_size"])
                for r in runtime["profile_table"]
            ],
        )
    )
