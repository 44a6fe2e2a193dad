"""``mobile-peft export``: a model directory -> a trainable bundle (pte | onnx | coreml)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._ui import console, human_bytes, print_json, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..core import contract

    p = sub.add_parser(
        "export",
        help="Export a trainable bundle: ExecuTorch .pte(+.ptd), ONNX Runtime training artifacts or Core ML.",
    )
    p.add_argument(
        "model_dir", type=Path, help="Model directory (mobile-peft build / LLaVA / MobileVLM checkpoint)."
    )
    p.add_argument("--format", choices=contract.FORMATS, required=True)
    p.add_argument(
        "--quant",
        choices=contract.QUANT_MODES,
        default=None,
        help="Quantise a float backbone first (default: as stored).",
    )
    p.add_argument(
        "--schedule",
        type=Path,
        default=None,
        help="Rank schedule JSON (mobile-peft plan); default: the adapters' current ranks.",
    )
    p.add_argument(
        "--adapter-dir", type=Path, default=None, help="Saved adapter to start from (save_adapter format)."
    )
    p.add_argument(
        "--adapter",
        choices=contract.ADAPTER_METHODS,
        default="lora",
        help="Default adapters when no --adapter-dir is given.",
    )
    p.add_argument("--rank", type=int, default=8, help="Rank of the default adapters.")
    p.add_argument(
        "--seed", type=int, default=0, help="Initialisation seed of the default adapters (default 0)."
    )
    p.add_argument("--batch-size", type=int, default=8, help="Batch size fixed in the exported graphs.")
    p.add_argument("--lr", type=float, default=None, help="Optimiser learning rate recorded in the manifest.")
    p.add_argument(
        "--no-xnnpack", action="store_true", help="pte: portable kernels only (slow; for debugging)."
    )
    p.add_argument(
        "--recompute-activations",
        action="store_true",
        help="pte: recompute cheap activations (attention's softmax above all) in the backward instead of "
        "keeping them from the forward: less memory, slower steps (see export/SUPPORT.md).",
    )
    p.add_argument("--zip", action="store_true", help="Also write BUNDLE.zip.")
    p.add_argument("--out", type=Path, required=True, help="Bundle directory to create.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core import contract
    from ..export import PteOptions, export_bundle

    options = PteOptions(xnnpack=not args.no_xnnpack, recompute_activations=args.recompute_activations)
    result = export_bundle(
        args.model_dir,
        args.format,
        args.out,
        quant=args.quant,
        schedule=args.schedule,
        adapter=args.adapter,
        rank=args.rank,
        adapter_dir=args.adapter_dir,
        batch_size=args.batch_size,
        lr=args.lr,
        make_zip=args.zip,
        seed=args.seed,
        pte_options=options if args.format == contract.FORMAT_PTE else None,
    )
    summary = {
        "format": args.format,
        "out": str(result.path),
        "zip": str(result.zip_path) if result.zip_path else None,
        "seconds": round(result.seconds, 1),
        "total_bytes": result.total_bytes,
        "files": result.sizes,
    }
    if args.json:
        print_json(summary)
        return 0
    rows = [(name, human_bytes(size)) for name, size in result.sizes.items()]
    rows.append(("total", human_bytes(result.total_bytes)))
    console.print(
        table(f"{args.format} bundle {result.path} ({summary['seconds']} s)", ["file", "size"], rows)
    )
    if result.zip_path:
        console.print(f"zip: {result.zip_path}")
    return 0
