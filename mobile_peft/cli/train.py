"""``mobile-peft train``: train a bundle the way a phone does (no authoring layer, no autograd)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._ui import StepProgress, console, err_console, human_bytes, print_json, print_skipped, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="Train an exported bundle with the on-device runtime (ExecuTorch / ONNX Runtime).")
    p.add_argument("bundle", type=Path, help="Bundle directory (or .zip) written by `mobile-peft export`.")
    p.add_argument("--data", default="digits", help="'digits', 'digits:<task>' or a folder with annotations.jsonl.")
    p.add_argument("--steps", type=int, default=30, help="Total training steps (counting resumed ones).")
    p.add_argument("--out", type=Path, required=True, help="Run directory: checkpoints, log, personal adapter.")
    p.add_argument("--resume", action="store_true", help="Continue from the newest checkpoint in --out.")
    p.add_argument("--checkpoint-every", type=int, default=10, help="Write a checkpoint every K steps.")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="pte: numpy SGD (default) or AdamW; onnx: the artifact's.")
    p.add_argument("--lr", type=float, default=None, help="Learning rate (default: the manifest's).")
    p.add_argument("--seed", type=int, default=0, help="Data order and split seed.")
    p.add_argument("--train-limit", type=int, default=None, help="Use at most this many training examples.")
    p.add_argument("--skip-bad", action="store_true", help="Leave out bad data-folder lines (listed) instead of stopping.")
    p.add_argument("--max-bad-steps", type=int, default=5,
                   help="Steps with a non-finite loss or gradient tolerated (skipped, logged) before the run stops.")
    p.add_argument("--device", default=None,
                   help="Refuse to start when the planned memory exceeds this device profile's app budget (see `profile`).")
    p.add_argument("--on-device-realloc", action="store_true", help="hydra-rank bundles: re-allocate ranks with the shipped performance model.")
    p.add_argument("--realloc-every", type=int, default=None, help="Re-allocation interval in steps (default: a third of the run).")
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.trainer import TrainOptions, train_bundle

    options = TrainOptions(
        steps=args.steps, data=args.data, checkpoint_every=args.checkpoint_every, lr=args.lr, optimizer=args.optimizer,
        seed=args.seed, train_limit=args.train_limit, on_device_realloc=args.on_device_realloc, realloc_every=args.realloc_every,
        skip_bad=args.skip_bad, max_bad_steps=args.max_bad_steps,
    )
    _check_memory(args)
    with StepProgress("on-device training", args.steps, enabled=not args.json) as progress:
        report = train_bundle(args.bundle, args.out, options, resume=args.resume,
                              on_step=lambda step, loss: progress.on_step_end(step, loss, None))
    summary = report.as_dict()
    if args.json:
        print_json({**summary, "losses": report.losses, "events": report.events})
    else:
        console.print(table("on-device training", ["field", "value"], [(k, v) for k, v in summary.items() if k != "skipped"]))
        print_skipped(report.skipped)
        for event in report.events:
            console.print(f"step {event['step']}: {event['kind']} {event.get('changed', '')}", highlight=False)
    return 0


def _check_memory(args: argparse.Namespace) -> None:
    """Warn (or, with --device, refuse) when the bundle's planned training memory exceeds the
    device's app budget (this machine's available memory without --device), naming what fits."""
    from ..core.errors import ConfigError
    from ..runtime.bundle import Bundle
    from ..runtime.devices import get_device
    from ..runtime.profile import memory_estimate

    estimate = memory_estimate(Bundle.open(args.bundle), args.device or "host")
    if estimate is None or estimate["fits"]:
        return
    message = (
        f"the bundle plans {human_bytes(estimate['planned_bytes'])} for training (batch {estimate['batch_size']}) "
        f"but {get_device(args.device or 'host').display_name} allows {human_bytes(estimate['budget_bytes'])}; "
        f"{estimate['advice']}"
    )
    if args.device:
        raise ConfigError(message + " (measure it with `mobile-peft profile BUNDLE --device ...`).")
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
