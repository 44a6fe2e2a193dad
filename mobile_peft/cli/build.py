"""``mobile-peft build``: write a model directory from a preset or a local checkpoint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core import contract
from ._ui import console, human_bytes, print_json, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="Build a model directory from a preset (random weights) or a local checkpoint.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="Architecture preset (random init).")
    src.add_argument("--from-pretrained", metavar="DIR", type=Path, help="Local LLaVA- or MobileVLM-style checkpoint.")
    p.add_argument("--quant", choices=contract.QUANT_MODES, default="none", help="Store the frozen linear weights quantised.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="Output model directory.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models import build_model, count_parameters, load_model, save_model
    from ..quant import backbone_bytes

    start = time.perf_counter()
    if args.preset:
        model, tokenizer = build_model(args.preset, quant=args.quant, seed=args.seed)
    else:
        model, tokenizer = load_model(args.from_pretrained, quant=args.quant)
    save_model(model, tokenizer, args.out)
    sizes = backbone_bytes(model)
    summary = {
        "model": model.config.name,
        "out": str(args.out),
        "parameters": count_parameters(model),
        "quant": model.config.quant,
        "image_tokens": model.num_image_tokens,
        "linear_weight_bytes": sizes.linear,
        "backbone_bytes": sizes.total,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if args.json:
        print_json(summary)
    else:
        console.print(table("built", ["field", "value"], [(k, human_bytes(v) if k.endswith("bytes") else v) for k, v in summary.items()]))
    return 0
