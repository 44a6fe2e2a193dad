"""``mobile-peft profile``: planned and measured memory of a bundle's training steps against the
lower bound recorded at export, step time, and a verdict against a device's app budget;
``--emulate DEVICE`` trains in a child held to that device's budget and cores (a run that
survives, not a sum)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._ui import console, human_bytes, print_json, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..runtime.devices import device_names
    from ..runtime.emulate import LIMITERS

    p = sub.add_parser("profile", help="Memory (planned, measured peak RSS) and step time of a bundle vs a device budget.")
    p.add_argument("bundle", type=Path, help="Bundle directory (or .zip).")
    p.add_argument("--device", default="host", choices=device_names(), help="Device profile (default: this machine).")
    p.add_argument("--steps", type=int, default=5, help="Training steps to measure.")
    p.add_argument("--plot", type=Path, default=None, help="Write a PNG of RSS over steps.")
    p.add_argument("--emulate", default=None, choices=device_names(), metavar="DEVICE",
                   help="Train in a child process held to DEVICE's app budget and big-core count (cgroup v1, else RLIMIT_AS).")
    p.add_argument("--budget", type=int, default=None, metavar="BYTES", help="Override the app budget (with --emulate).")
    p.add_argument("--limiter", default="auto", choices=LIMITERS,
                   help="How --emulate holds the child to the budget (default: cgroup v1, else RLIMIT_AS).")
    p.add_argument("--emulator", action="store_true", help="Run on an Android emulator/device over adb instead of this host.")
    p.add_argument("--serial", default=None, help="adb serial of the emulator/device (with --emulator).")
    p.add_argument("--runner", type=Path, default=None, help="On-device runner binary to push (with --emulator).")
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    p.set_defaults(run=run)


def bound_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """The lower bound recorded at export, by term, and the measured peak growth over it."""
    bound = report.get("lower_bound")
    if not bound:
        return [("lower bound", "n/a (bundle exported before the bound was recorded; re-export it)")]
    states = {0: "no optimiser state", 1: "1 optimiser state", 2: "2 optimiser states"}.get(
        bound["optimizer_states"], f"{bound['optimizer_states']} optimiser states")
    out = [
        ("lower bound", f"{human_bytes(bound['total_bytes'])} at batch {bound['batch_size']}"),
        ("  backbone (as stored)", human_bytes(bound["backbone_bytes"])),
        ("  trainable x (weights + gradients + states)",
         f"{human_bytes(bound['trainable_bytes'])} x (1 + 1 + {bound['optimizer_states']}) = "
         f"{human_bytes(bound['trainable_bytes'] + bound['gradient_bytes'] + bound['optimizer_state_bytes'])} ({states})"),
        ("  activations kept for backward", human_bytes(bound["activation_bytes"])),
    ]
    ratio = report.get("ratio_to_bound")
    out.append(("peak growth / lower bound", f"{ratio:.2f}x" if ratio is not None else "n/a (not measured)"))
    return out


def emulate_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    verdict = "fits (survived every step)" if report["fits"] else f"DOES NOT FIT: {report['failure']}"
    bound = report["lower_bound_bytes"]
    return [
        ("bundle", f"{report['bundle']} ({report['format']})"),
        ("device", f"{report['device']}, budget {human_bytes(report['budget_bytes'])}, {report['threads']} core(s)"),
        ("held by", f"{report['limiter']}, limit {human_bytes(report['limit_bytes'])}"),
        ("steps completed", f"{report['completed_steps']} of {report['steps']}"),
        ("peak growth reached", human_bytes(report["peak_growth_bytes"])),
        ("peak growth / lower bound", "n/a (no bound recorded)" if not bound else
         f"{report['ratio_to_bound']:.2f}x of {human_bytes(bound)}" if report["fits"] else f"n/a (stopped early; bound {human_bytes(bound)})"),
        ("verdict", verdict),
        *(("note", n) for n in report["notes"]),
    ]


def rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """The profile table (also used by the demo)."""
    if not report.get("measured", True):
        return [("bundle", f"{report['model']} {report['format']} ({report['quant']}), batch {report['batch_size']}"),
                *bound_rows(report), ("note", report["notes"])]
    b = report["breakdown"]
    planned = report.get("planned") or {}
    out = [
        ("bundle", f"{report['model']} {report['format']} ({report['quant']}), batch {report['batch_size']}, seq {report['sequence_length']}"),
        ("device", f"{report['device_display_name']}, budget {human_bytes(report['app_budget_bytes'])}"),
        ("planned constants", human_bytes(planned["constant_bytes"]) if planned else "n/a (no ahead-of-time plan)"),
        ("planned train arena", human_bytes(planned["train_arena_bytes"]) if planned else "n/a"),
        ("baseline RSS (before bundle)", human_bytes(report["baseline_rss_bytes"])),
        ("peak RSS", human_bytes(report["peak_rss_bytes"])),
        ("peak growth", human_bytes(report["peak_growth_bytes"])),
        ("growth / (planned + constants)", report["growth_over_planned"] if report["growth_over_planned"] is not None else "n/a"),
        ("  backbone (frozen)", human_bytes(b["backbone_bytes"])),
        ("  adapters", human_bytes(b["adapter_bytes"])),
        ("  gradients", human_bytes(b["gradient_bytes"])),
        ("  optimizer state", human_bytes(b["optimizer_state_bytes"])),
        ("  activations", human_bytes(b["activation_bytes"])),
        *bound_rows(report),
        ("step time (median)", f"{1000 * report['step_seconds_median']:.1f} ms on {report['threads']} thread(s)"),
        ("verdict", ("fits" if report["fits"] else "DOES NOT FIT") + f", headroom {human_bytes(report['headroom_bytes'])}"),
        ("largest batch that fits", report["max_batch_size"]),
        ("largest sequence that fits", report["max_sequence_length"]),
    ]
    return out


def plot_memory(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    from .plots import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 1024 * 1024
    rss = [(r - report["baseline_rss_bytes"]) / mib for r in report["rss_per_step_bytes"]]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(range(1, len(rss) + 1), rss, marker="o", label="RSS growth after step")
    ax.axhline(report["peak_growth_bytes"] / mib, color="tab:red", ls="--", label="peak growth")
    if report.get("planned_total_bytes"):
        ax.axhline(report["planned_total_bytes"] / mib, color="tab:green", ls=":", label="planned + constants")
    ax.set_xlabel("step")
    ax.set_ylabel("MiB over baseline")
    ax.set_title(f"{report['model']} {report['format']} training memory ({report['device']})")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    if args.emulate:
        from ..runtime.emulate import emulate_bundle

        report = emulate_bundle(args.bundle, args.emulate, steps=args.steps, budget_bytes=args.budget, limiter=args.limiter)
        if args.json:
            print_json(report)
        else:
            console.print(table(f"training held to {report['device']}'s budget", ["", "value"], emulate_rows(report)))
        return 0
    if args.emulator:
        from ..runtime.emulator import profile_on_emulator

        report = profile_on_emulator(args.bundle, steps=args.steps, serial=args.serial, runner=args.runner, device=args.device)
        if args.json:
            print_json(report)
        else:
            console.print(table("emulator profile", ["field", "value"], report.items()))
        return 0
    from ..runtime.profile import profile_bundle

    report = profile_bundle(args.bundle, args.device, args.steps)
    if args.plot:
        report["plot"] = str(plot_memory(report, args.plot))
    if args.json:
        print_json(report)
    else:
        console.print(table(f"training memory profile on {report['device']}", ["", "value"], rows(report)))
    return 0
