"""The Markdown tables the benchmarks write into ``benchmarks/results/*.md``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of a GitHub Markdown table: header, separator, one line per row."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def write_results(results: dict[str, Any], out: Path, name: str, markdown: Callable[[dict[str, Any]], str]) -> tuple[Path, Path]:
    """``out/<name>.json`` (the results) and ``out/<name>.md`` (``markdown(results)``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(markdown(results).rstrip("\n") + "\n")
    return json_path, md_path
