"""``mobile-peft inspect``: what is inside a bundle; verifies every checksum (exit 2 if invalid)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._ui import console, human_bytes, print_json, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="Validate a bundle (checksums, manifest) and print what is inside.")
    p.add_argument("bundle", type=Path, nargs="?", help="Bundle directory or .zip.")
    p.add_argument("--schema", action="store_true", help="Print the manifest's JSON Schema (the published one) and exit.")
    p.add_argument("--json", action="store_true", help="Print as JSON.")
    p.add_argument("--max-rows", type=int, default=40, help="Rank schedule rows shown (table output).")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.schema import SCHEMA_FILE
    from ..core.summary import summarize_bundle

    if args.schema:
        print(SCHEMA_FILE.read_text(), end="")
        return 0
    if args.bundle is None:
        raise ConfigError("give a bundle directory or .zip to inspect (or --schema for the manifest's JSON Schema).")
    s = summarize_bundle(args.bundle)  # BundleError (a MobilePeftError) -> exit 2 with the problems
    if args.json:
        print_json(s)
        return 0
    model = s["model"]
    console.print(f"[bold]{s['format']}[/] bundle {s['bundle']} (schema {s['schema_version']}): {model['name']}, "
                  f"backbone {model['quant']}, {model['parameters']:,} parameters; all {len(s['files'])} checksums OK")
    console.print(table("files", ["file", "size", "sha256"], [(f["path"], human_bytes(f["size"]), f["sha256"][:16]) for f in s["files"]]
                        + [("total", human_bytes(s["total_bytes"]), "")]))
    backbone = s["backbone"]
    console.print(table("backbone bytes by dtype", ["dtype", "bytes"], [*((k, human_bytes(v)) for k, v in backbone["bytes_by_dtype"].items()),
                                                                        ("total", human_bytes(backbone["total_bytes"]))]))
    console.print(f"trainable: {s['trainable_tensors']} tensors, {s['trainable_parameters']:,} parameters; optimizer {s['optimizer']}")
    rs = s["rank_schedule"]
    rows = [(r["module"], r["slot"], r["phase"], r["start_step"], r["rank"], r["r_max"]) for r in rs["table"]]
    more = len(rows) - args.max_rows
    console.print(table(f"rank schedule ({rs['allocator']}, {rs['adapter']}, budget {rs['budget_params']:,}, {rs['phases']} phases)",
                        ["module", "slot", "phase", "start", "rank", "r_max"], rows[: args.max_rows]))
    if more > 0:
        console.print(f"... {more} more rows (--max-rows, or --json)")
    console.print(table("input spec", ["field", "value"], list(s["input_spec"].items())))
    return 0
