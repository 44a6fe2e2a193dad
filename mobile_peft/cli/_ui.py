"""Terminal helpers owned by the CLI: progress bars, tables, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table; accuracies (a column, or a row whose first cell, named "accuracy ...") are
    shown as percentages."""
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        row_is_accuracy = _is_accuracy(row[0]) if row else False
        t.add_row(*(percent(v) if i and (row_is_accuracy or _is_accuracy(columns[i])) else fmt(v) for i, v in enumerate(row)))
    return t


def _is_accuracy(label: Any) -> bool:
    return isinstance(label, str) and "accuracy" in label


def percent(value: Any) -> str:
    """A fraction in [0, 1] as ``"37.5 %"``; anything else as :func:`fmt` shows it."""
    if isinstance(value, float | int) and not isinstance(value, bool) and 0 <= value <= 1:
        return f"{100 * value:.1f} %"
    return fmt(value)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_skipped(skipped: Sequence[str], shown: int = 20) -> None:
    """The data lines ``--skip-bad`` left out, on stderr (stdout stays the report)."""
    if not skipped:
        return
    err_console.print(f"[yellow]skipped {len(skipped)} bad data line(s)[/] (--skip-bad):", highlight=False)
    for line in skipped[:shown]:
        err_console.print(f"  {line}", highlight=False, markup=False)
    if len(skipped) > shown:
        err_console.print(f"  ... and {len(skipped) - shown} more", highlight=False)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class StepProgress:
    """A rich progress bar usable as a trainer callback (``on_step_end``)."""

    def __init__(self, description: str, total: int, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task(description, total=total, loss="-")

    def __enter__(self) -> StepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_step_end(self, step: int, loss: float, model: object) -> None:
        self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")
