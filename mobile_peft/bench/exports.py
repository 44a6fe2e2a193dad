"""The export benchmark: bundle size, export wall time and peak memory per format and adapter.

Each export runs in its own Python process (``python -m mobile_peft.bench._export_worker``) so
that its peak RSS is its own (``ru_maxrss`` of that process) and an export killed by the OOM
killer is recorded as a failed row, with its exit status, instead of ending the benchmark. The
base model is built once per preset and quantisation (random weights, cached on disk).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..models import build_model, save_model
from . import _markdown

__all__ = ["ExportBenchConfig", "export_markdown", "run_export_bench"]


@dataclass
class ExportBenchConfig:
    preset: str = "smolvlm-256m"
    quant: str = "int8"
    formats: tuple[str, ...] = ("pte", "onnx", "coreml")
    adapters: tuple[str, ...] = ("lora",)
    rank: int = 8
    batch_size: int = 1
    work_dir: str = "benchmarks/.cache/exports"


def _base(config: ExportBenchConfig) -> Path:
    directory = Path(config.work_dir) / f"{config.preset}-{config.quant}"
    if not (directory / "config.json").is_file():
        model, tokenizer = build_model(config.preset, quant=config.quant)
        save_model(model, tokenizer, directory)
    return directory


def _one(config: ExportBenchConfig, base: Path, fmt: str, adapter: str) -> dict[str, Any]:
    out = Path(config.work_dir) / f"{config.preset}-{config.quant}-{adapter}-{fmt}"
    cmd = [
        sys.executable,
        "-m",
        "mobile_peft.bench._export_worker",
        str(base),
        fmt,
        adapter,
        str(config.rank),
        str(config.batch_size),
        str(out),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    row: dict[str, Any] = {
        "preset": config.preset,
        "quant": config.quant,
        "adapter": adapter,
        "format": fmt,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or [""]
        return {**row, "exports": False, "returncode": proc.returncode, "error": tail[0][:300]}
    return {**row, "exports": True, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_export_bench(config: ExportBenchConfig) -> dict[str, Any]:
    """Every (adapter, format) of ``config``; returns the JSON-ready results."""
    start = time.perf_counter()
    base = _base(config)
    rows = [_one(config, base, fmt, adapter) for adapter in config.adapters for fmt in config.formats]
    return {"config": asdict(config), "total_seconds": round(time.perf_counter() - start, 1), "rows": rows}


def export_markdown(results: dict[str, Any], command: str) -> str:
    head = [
        "preset",
        "quant",
        "adapter",
        "format",
        "exports",
        "bundle MB",
        "main files (MB)",
        "export s",
        "peak RSS GB",
    ]
    rows = []
    for r in results["rows"]:
        if r["exports"]:
            files = ", ".join(
                f"{name} {size / 1e6:.1f}"
                for name, size in sorted(r["sizes"].items(), key=lambda kv: -kv[1])[:3]
            )
            cells = [
                "yes",
                f"{r['total_bytes'] / 1e6:.1f}",
                files,
                f"{r['export_seconds']:.1f}",
                f"{r['peak_rss_bytes'] / 1e9:.2f}",
            ]
        else:
            cells = [f"NO (exit {r['returncode']}: {r['error']})", "", "", f"{r['wall_s']:.1f}", ""]
        rows.append([r["preset"], r["quant"], r["adapter"], r["format"], *cells])
    lines = _markdown.table(head, rows) + [
        "",
        f"Command: `{command}`. Total {results['total_seconds']:.0f} s; each export in its own process (peak RSS = its ru_maxrss).",
    ]
    return "\n".join(lines) + "\n"
