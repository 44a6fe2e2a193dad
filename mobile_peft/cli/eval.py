"""``mobile-peft eval``: accuracy of a bundle (and a personal adapter) with the bundle's eval method."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._ui import console, print_json, print_skipped, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Accuracy of an exported bundle, optionally with a trained personal adapter.")
    p.add_argument("bundle", type=Path, help="Bundle directory (or .zip).")
    p.add_argument("--adapter", type=Path, default=None, help="Run directory of `mobile-peft train` (or any adapter directory).")
    p.add_argument("--data", default="digits", help="'digits', 'digits:<task>' or a folder with annotations.jsonl.")
    p.add_argument("--split", choices=["train", "eval"], default="eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="Evaluate at most this many examples.")
    p.add_argument("--skip-bad", action="store_true", help="Leave out bad data-folder lines (listed) instead of stopping.")
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.evaluate import evaluate_bundle

    report = evaluate_bundle(args.bundle, args.data, args.adapter, args.split, args.seed, args.limit, args.skip_bad)
    if args.json:
        print_json(report.as_dict())
    else:
        rows = [(k, v) for k, v in report.as_dict().items() if k != "skipped"]
        console.print(table("on-device eval", ["field", "value"], rows))
        print_skipped(report.skipped)
    return 0
