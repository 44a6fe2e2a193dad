"""``mobile-peft finetune``: eager adapter (or full) fine-tuning with accuracy before/after."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core import contract
from ._ui import StepProgress, console, human_bytes, print_json, print_skipped, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="Fine-tune adapters (or every weight with --full) in eager PyTorch.")
    p.add_argument("model_dir", type=Path, help="Model directory (mobile-peft build) or a LLaVA/MobileVLM checkpoint.")
    p.add_argument("--data", default="digits", help="'digits', 'digits:<task>' or a folder with images/ + annotations.jsonl.")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--adapter", choices=contract.ADAPTER_METHODS, default="lora", help="Adapter method.")
    p.add_argument("--rank", type=int, default=8, help="Adapter rank (each branch for hydra).")
    p.add_argument("--alpha", type=float, default=None, help="Scale numerator (default 2*rank).")
    p.add_argument("--targets", default=None, help="Regex of module paths to adapt, or a comma list of names/suffixes (default: the model's).")
    p.add_argument("--exclude", default=None, help="Modules never adapted (same syntax as --targets).")
    p.add_argument("--quant", choices=contract.QUANT_MODES, default=None, help="Quantise a float backbone before training.")
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--full", action="store_true", help="Fine-tune every weight (baseline; float backbone only).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-limit", type=int, default=None, help="Evaluate on at most this many examples.")
    p.add_argument("--skip-bad", action="store_true", help="Leave out bad data-folder lines (listed) instead of stopping.")
    p.add_argument("--out", type=Path, default=None, help="Where to write the adapter (or the full model with --full).")
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    p.add_argument("--allocator", default=None, help="Rank allocator (uniform, hydra-rank, ard): ranks change during training.")
    p.add_argument("--schedule", type=Path, default=None, help="With --allocator: a schedule from `mobile-peft plan` (skips planning).")
    p.add_argument("--budget-params", type=int, default=None, help="With --allocator: trainable-parameter budget (default: uniform --rank).")
    p.add_argument("--r-max", type=int, default=None, help="With --allocator: adapters' maximum rank (default 4 x --rank).")
    p.set_defaults(run=run)


def _targets(text: str | None) -> str | list[str] | None:
    if text is None or not text.strip():
        return None
    return [t.strip() for t in text.split(",") if t.strip()] if "," in text else text


def _start_allocation(model, args, targets, train_ds, eval_ds):
    """--allocator: adapters at r_max (default 4 x --rank), budget = --budget-params or uniform --rank."""
    from ..allocators import RankSchedule, get_allocator, start_allocation
    from ..train.job import make_adapter_config

    config = make_adapter_config(args.adapter, args.r_max or 4 * args.rank, args.alpha, targets, _targets(args.exclude))
    schedule = RankSchedule.load(args.schedule) if args.schedule else None
    budget_rank = None if args.budget_params else args.rank
    return start_allocation(model, get_allocator(args.allocator), config, train_ds, eval_ds, args.steps, args.budget_params, budget_rank, schedule)


def run(args: argparse.Namespace) -> int:
    from ..adapters import save_adapter
    from ..models import load_model, save_model
    from ..train import TrainConfig
    from ..train.job import finetune, make_adapter_config, make_datasets
    from .plots import plot_losses

    model, tokenizer = load_model(args.model_dir, quant=args.quant)
    skipped: list[str] = []
    train_ds, eval_ds = make_datasets(args.data, tokenizer, model.config.input_spec, args.seed, eval_limit=args.eval_limit,
                                      skip_bad=args.skip_bad, skipped=skipped)
    adapter_config = None
    if not args.full:
        targets = _targets(args.targets) or model.config.default_targets
        adapter_config = make_adapter_config(args.adapter, args.rank, args.alpha, targets, _targets(args.exclude))
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, full=args.full, seed=args.seed
    )
    session = None
    with StepProgress("fine-tuning", args.steps, enabled=not args.json) as progress:
        if args.allocator and not args.full:
            session, monitor = _start_allocation(model, args, adapter_config.target_modules, train_ds, eval_ds)
            report = finetune(model, train_ds, eval_ds, config, None, callbacks=[progress, *session.callbacks, monitor], extra_loss=session.extra_loss)
        else:
            report = finetune(model, train_ds, eval_ds, config, adapter_config, callbacks=[progress])
    out = args.out or args.model_dir / ("full_finetune" if args.full else f"adapter_{args.adapter}")
    if args.full:
        save_model(model, tokenizer, out)
    else:
        if session is not None:  # freeze (ARD), check the budget, log the re-allocations
            from ..allocators import finish_allocation
            from ..train import evaluate

            schedule = finish_allocation(model, session, monitor)
            if not args.json:  # --json keeps stdout pure JSON (the count is in it)
                for phase in schedule.phases[1:]:
                    console.print(f"{args.allocator}: re-allocated ranks at step {phase.start_step}")
            report.after = evaluate(model, eval_ds)
            out.mkdir(parents=True, exist_ok=True)
            schedule.save(out / "rank_schedule.json")
        save_adapter(model, out)
    (out / "train_history.json").write_text(json.dumps({"losses": report.train.losses, **report.as_dict()}, indent=2) + "\n")
    plot_losses({"train loss": report.train.losses}, out / "loss_curve.png", title=f"fine-tuning on {args.data}")
    summary = {"out": str(out), "data": args.data, "adapter": "full" if args.full else args.adapter, **report.as_dict()}
    if session is not None:  # trainable_params counts every adapter tensor up to r_max; this is the budget's count
        from ..allocators import active_params

        summary.update(allocator=args.allocator, active_params=active_params(model), reallocations=len(schedule.phases) - 1)
    if args.json:
        print_json({**summary, "skipped": skipped})
    else:
        rows = [(k, human_bytes(v) if k.endswith("bytes") else v) for k, v in summary.items()]
        console.print(table("fine-tuning report", ["field", "value"], rows))
        print_skipped(skipped)
    return 0
