"""``mobile-peft fleet``: federated personalisation of rank-heterogeneous adapters on Flower.

* ``fleet simulate`` -- the benchmark on Flower's simulation engine: N virtual phones train the
  bundle with the on-device runtime, one federated run per aggregation rule, then held-out clients
  score the global and the personalised adapters (``benchmarks/results/fleet.json`` + ``.md``);
* ``fleet serve`` / ``fleet join BUNDLE --data ...`` -- the same apps as real processes on a network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._ui import console, err_console, human_bytes, print_json, table

RESULTS = Path("benchmarks/results/fleet.json")
DEFAULT_METHODS = "rank-aware,fedavg,hetlora,flexlora"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="Federated personalisation on Flower: simulate a fleet, or serve / join one.")
    fsub = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")

    s = fsub.add_parser("simulate", help="Run the fleet benchmark on Flower's simulation engine.")
    s.add_argument("bundle", nargs="?", type=Path, default=None,
                   help="onnx/pte bundle the phones train (default: the benchmark's pre-trained tiny bundle, built and cached).")
    s.add_argument("--clients", type=int, default=100, help="Simulated phones taking part.")
    s.add_argument("--heldout", type=int, default=20, help="Further clients that never train in the federation (scored).")
    s.add_argument("--rounds", type=int, default=20)
    s.add_argument("--fraction", type=float, default=0.1, help="Share of clients sampled per round.")
    s.add_argument("--local-steps", type=int, default=10, help="On-device steps per client per round.")
    s.add_argument("--personal-steps", type=int, default=10, help="Held-out clients' personalisation steps.")
    s.add_argument("--methods", default=DEFAULT_METHODS,
                   help="Comma-separated aggregation rules (rank-aware, rank-aware-norebase, fedavg, hetlora, flexlora), "
                        "each optionally +spectral (the server's per-module rank schedule), e.g. rank-aware+spectral.")
    s.add_argument("--validation", action="store_true",
                   help="Score the validation clients (after the held-out ones) instead: for choosing settings.")
    s.add_argument("--uniform-rank", type=int, default=4, help="fedavg's rank on every module (default: the tiers' mean).")
    s.add_argument("--tiers", default="2,4,6", help="Device tiers' ranks (each module ±1 around its phone's tier).")
    s.add_argument("--lr", type=float, default=None, help="Local learning rate (default: the bundle's).")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--seeds", default=None,
                   help="Comma-separated seeds, one whole run each (clients, tiers, samples): mean ± SE and paired "
                        "differences to fedavg (default: --seed).")
    s.add_argument("--out", type=Path, default=RESULTS, help="Results JSON (a .md table is written beside it).")
    s.add_argument("--smoke", action="store_true", help="Seconds-long settings (well-formed results, not a measurement).")
    s.add_argument("--json", action="store_true", help="Print the results as JSON.")
    s.set_defaults(run=run_simulate)

    v = fsub.add_parser("serve", help="Run a fleet server (a Flower SuperLink and one run of the fleet's apps) for phones to join.")
    v.add_argument("bundle", type=Path, help="The bundle every phone trains (the server reads its manifest).")
    v.add_argument("--address", default="127.0.0.1:9092", help="host:port the SuperLink listens on (plain HTTP: a trusted network).")
    v.add_argument("--clients", type=int, default=2, help="Wait for this many phones before round 1.")
    v.add_argument("--wait-seconds", type=float, default=300.0, help="How long to wait for them to join and answer.")
    v.add_argument("--rounds", type=int, default=3)
    v.add_argument("--fraction", type=float, default=1.0)
    v.add_argument("--local-steps", type=int, default=5)
    v.add_argument("--rule", default="rank-aware")
    v.add_argument("--uniform-rank", type=int, default=None)
    v.add_argument("--schedule", choices=("declared", "spectral"), default="declared",
                   help="Ranks the phones train: their declared ones, or the server's per-module spectral schedule within them.")
    v.add_argument("--round-timeout", type=float, default=120.0, help="Seconds to wait for replies; late ones are dropped.")
    v.add_argument("--out", type=Path, default=None,
                   help="Write the global adapter (PEFT format) and rounds.json (rewritten after every round) here.")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--json", action="store_true")
    v.set_defaults(run=run_serve)

    j = fsub.add_parser("join", help="Join a fleet server as one phone (a Flower SuperNode): train BUNDLE on local data each round.")
    j.add_argument("bundle", type=Path)
    j.add_argument("--data", required=True,
                   help="'fleet:<index>' (client <index> of the embedded non-IID digits fleet), 'digits:<task>' or a data folder.")
    j.add_argument("--server", default="127.0.0.1:9092", help="host:port of `mobile-peft fleet serve`.")
    j.add_argument("--client", default=None, help="This phone's name, unique in the fleet (default: from --data).")
    j.add_argument("--tier", type=int, default=None, help="Device tier (index into the fleet's tiers; default: from --data).")
    j.add_argument("--tiers", default="2,4,6")
    j.add_argument("--wait-seconds", type=float, default=60.0, help="How long to wait for the server to answer at all.")
    j.add_argument("--linger-seconds", type=float, default=5.0,
                   help="Leave once the server has been gone this long (it ends when its run is done).")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--json", action="store_true")
    j.set_defaults(run=run_join)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    from ..core.errors import ConfigError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. 2,4,6.") from None


def run_simulate(args: argparse.Namespace) -> int:
    from ..fleet.bench import FleetBenchConfig, markdown_table, method_server, run_fleet_seeds, smoke_config
    from ..fleet.partition import PartitionConfig

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.smoke:
        config = smoke_config(str(Path("benchmarks/.cache")))
        config.methods = methods
    else:
        config = FleetBenchConfig(
            clients=args.clients, heldout=args.heldout, rounds=args.rounds, fraction=args.fraction,
            local_steps=args.local_steps, personal_steps=args.personal_steps, methods=methods,
            uniform_rank=args.uniform_rank, lr=args.lr, seed=args.seed,
            partition=PartitionConfig(tier_ranks=_ints(args.tiers, "--tiers"), seed=args.seed), validation=args.validation,
        )
    for m in methods:
        method_server(m, config)  # an unknown rule or schedule fails now, before any training
    seeds = _ints(args.seeds, "--seeds") if args.seeds is not None else (args.seed,)
    done = {"n": 0}
    total = len(methods) * config.rounds * len(seeds)

    def on_round(server, report) -> None:  # noqa: ANN001
        done["n"] += 1
        if not args.json:
            err_console.print(f"[{done['n']}/{total}] {server.rule}{'+' + server.schedule if server.schedule != 'declared' else ''} round {report.round}: {len(report.accepted)} accepted, "
                              f"{len(report.rejected)} refused, {len(report.failed)} no reply", highlight=False)

    results = run_fleet_seeds(config, seeds, bundle=args.bundle, verbose=args.verbose, on_round=on_round)
    results["smoke"] = bool(args.smoke)
    command = "mobile-peft fleet simulate" + (" --smoke" if args.smoke else
                                              f" --clients {config.clients} --rounds {config.rounds} --fraction {config.fraction}")
    if args.methods != DEFAULT_METHODS:
        command += f" --methods {args.methods}"
    if args.seeds is not None:
        command += f" --seeds {args.seeds}"
    if args.validation:
        command += " --validation"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown_table(results, command))
    if args.json:
        print_json(results)
        return 0
    rows = [(r["method"], r["ranks"], r["global_accuracy"], r["personalised_accuracy"], r["local_only_accuracy"],
             human_bytes(r["bytes_per_round"]), r["rounds_lost"], r["wall_seconds"]) for r in results["rows"]]
    console.print(table("fleet (held-out clients)", ["method", "ranks", "global accuracy", "personalised accuracy",
                                                     "local-only accuracy", "bytes / round", "rounds lost", "wall s"], rows))
    console.print(f"results: {args.out} and {args.out.with_suffix('.md')}", highlight=False)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from ..fleet.deploy import serve

    def on_round(r: dict) -> None:
        if not args.json:
            err_console.print(f"round {r['round']}: {r['accepted']}/{r['sampled']} accepted, {len(r['rejected'])} refused, "
                              f"{len(r['failed'])} no reply", highlight=False)

    summary = serve(args, on_round=on_round)
    if args.json:
        print_json(summary)
    else:
        rows = [(r["round"], r["sampled"], r["accepted"], len(r["rejected"]), len(r["failed"]),
                 human_bytes(r["bytes_down"] + r["bytes_up"])) for r in summary["rounds"]]
        console.print(table("fleet server", ["round", "sampled", "accepted", "refused", "no reply", "bytes"], rows))
        if summary.get("adapter_dir"):
            console.print(f"global adapter: {summary['adapter_dir']}", highlight=False)
    return 0


def run_join(args: argparse.Namespace) -> int:
    from ..fleet.deploy import join

    args.tiers = _ints(args.tiers, "--tiers")
    summary = join(args)
    if args.json:
        print_json(summary)
    else:
        console.print(f"{summary['client']} left the fleet after {summary['seconds']:.0f} s "
                      f"({summary['examples']} local examples)", highlight=False)
    return 0
