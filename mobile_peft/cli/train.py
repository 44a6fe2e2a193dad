"""``mobile-peft train``: train a bundle the way a phone does (no authoring layer, no autograd)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._ui import StepProgress, console, print_json, table


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
    p.add_argument("--on-device-realloc", action="store_true", help="hydra-rank bundles: re-allocate ranks with the shipped performance model.")
    p.add_argument("--realloc-every", type=int, default=None, help="Re-allocation interval in steps (default: a third of the run).")
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.trainer import TrainOptions, train_bundle

    options = TrainOptions(
        steps=args.steps, data=args.data, checkpoint_every=args.checkpoint_every, lr=args.lr, optimizer=args.optimizer,
        seed=args.seed, train_limit=args.train_limit, on_device_realloc=args.on_device_realloc, realloc_every=args.realloc_every,
    )
    with StepProgress("on-device training", args.steps, enabled=not args.json) as progress:
        report = train_bundle(args.bundle, args.out, options, resume=args.resume,
                              on_step=lambda step, loss: progress.on_step_end(step, loss, None))
    summary = report.as_dict()
    if args.json:
        print_json({**summary, "losses": report.losses, "events": report.events})
    else:
        console.print(table("on-device training", ["field", "value"], summary.items()))
        for event in report.events:
            console.print(f"step {event['step']}: {event['kind']} {event.get('changed', '')}", highlight=False)
    return 0
