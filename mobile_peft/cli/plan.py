"""``mobile-peft plan``: search a rank schedule for a model and a budget, print it, save it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import contract
from ..core.units import module_place
from ._ui import console, print_skipped, table

if TYPE_CHECKING:
    from ..allocators import RankSchedule


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="Allocate adapter ranks under a parameter budget (uniform, hydra-rank, ard).")
    p.add_argument("model_dir", type=Path, help="Model directory (mobile-peft build) or a checkpoint.")
    p.add_argument("--allocator", default="hydra-rank")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-params", type=int, help="Trainable parameters at the active ranks.")
    budget.add_argument("--budget-rank", type=int, help="The same as uniform LoRA of this rank.")
    p.add_argument("--data", default="digits", help="'digits', 'digits:<task>' or a folder with images/ + annotations.jsonl.")
    p.add_argument("--adapter", choices=contract.ADAPTER_METHODS, default="lora")
    p.add_argument("--r-max", type=int, default=None, help="Adapters' maximum rank (default 4x the budget rank, or 8).")
    p.add_argument("--targets", default=None, help="Regex of module paths to adapt (default: the model's).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None, help="Use at most this many training examples.")
    p.add_argument("--skip-bad", action="store_true", help="Leave out bad data-folder lines (listed) instead of stopping.")
    p.add_argument("--out", type=Path, default=Path("schedule.json"))
    p.add_argument("--plot", action="store_true", help="Also write a heat-map PNG beside --out.")
    p.set_defaults(run=run)


def rank_table(schedule: RankSchedule, phase: int = -1) -> tuple[list[str], list[tuple]]:
    """Rows = (tower, layer), columns = module type (slot-suffixed for multi-slot adapters)."""

    cells: dict[tuple[str, int], dict[str, int]] = {}
    columns: list[str] = []
    for module, slots in schedule.phases[phase].ranks.items():
        place = module_place(module)
        for slot, r in slots.items():
            col = place.kind if len(slots) == 1 else f"{place.kind}:{slot[:3]}"
            if col not in columns:
                columns.append(col)
            cells.setdefault((place.tower, place.layer), {})[col] = r
    rows = [(f"{t} {layer}", *(cells[(t, layer)].get(c, "") for c in columns)) for t, layer in cells]
    return ["layer", *columns], rows


def plot_schedule(schedule: RankSchedule, path: Path) -> Path:
    """Heat-map PNG: layers x module types, one panel per phase."""
    import matplotlib

    from .plots import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(schedule.phases)
    fig, axes = plt.subplots(1, n, figsize=(4 + 3 * n, 5), dpi=100, squeeze=False)
    for i, phase in enumerate(schedule.phases):
        columns, rows = rank_table(schedule, i)
        grid = np.array([[np.nan if v == "" else float(v) for v in row[1:]] for row in rows])
        ax = axes[0][i]
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0)
        ax.set_xticks(range(len(columns) - 1), columns[1:], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
        ax.set_title(f"phase {i}: from step {phase.start_step}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"{schedule.allocator} ranks ({schedule.adapter}, budget {schedule.budget_params:,})")
    return save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..adapters import apply_adapters
    from ..allocators import get_allocator, resolve_budget
    from ..models import load_model
    from ..train.job import make_adapter_config, make_datasets

    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model_dir)
    targets = args.targets or model.config.default_targets
    r_max = args.r_max or (4 * args.budget_rank if args.budget_rank else 8)
    apply_adapters(model, make_adapter_config(args.adapter, r_max, None, targets))
    budget = resolve_budget(model, budget_params=args.budget_params, budget_rank=args.budget_rank)
    skipped: list[str] = []
    train_ds, eval_ds = make_datasets(args.data, tokenizer, model.config.input_spec, args.seed, train_limit=args.train_limit,
                                      skip_bad=args.skip_bad, skipped=skipped)
    allocator = get_allocator(args.allocator, seed=args.seed) if args.allocator != "uniform" else get_allocator("uniform")
    schedule = allocator.plan(model, train_ds, eval_ds, budget)
    schedule.save(args.out)
    columns, rows = rank_table(schedule)
    used = schedule.phase_params(schedule.phases[-1])
    console.print(table(f"{args.allocator} ranks ({args.adapter}, r_max {r_max}; {used:,} of {budget:,} parameters)", columns, rows))
    perf = schedule.performance_model
    if perf:
        fit = perf["fit"]
        console.print(f"performance model: {fit['probes']} probes, Spearman in-sample {fit['spearman_in_sample']:+.2f}, leave-one-out {fit['spearman_loo']:+.2f}")
    print_skipped(skipped)
    console.print(f"wrote {args.out}")
    if args.plot:
        console.print(f"wrote {plot_schedule(schedule, args.out.with_suffix('.png'))}")
    return 0
