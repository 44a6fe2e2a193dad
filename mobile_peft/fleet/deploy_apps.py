"""The fleet's ``ServerApp`` and ``ClientApp`` as a Flower deployment loads them (``flwr run``).

The Flower App Bundle that :mod:`.deploy` submits names these two objects as its components:

* :data:`server_app` reads the run's settings from the run config (:func:`server_run_config`
  writes them) and runs :func:`~.apps.run_server` -- the simulation's round logic -- on the
  SuperLink's grid; after every round it rewrites ``<out>/rounds.json`` (so a crash loses no
  finished round), and at the end writes the global adapter to ``<out>`` (PEFT format);
* :data:`client_app` is :func:`~.apps.make_client_app` with each SuperNode's identity read from its
  ``--node-config`` (:func:`node_config` / :func:`node_config_arg` write it,
  :func:`phone_from_node_config` reads it).

Importing this module imports Flower (the ``fleet`` extra).
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from mobile_peft.core.datasets import load_dataset
from mobile_peft.core.errors import ConfigError

from .apps import FleetSetup, Phone, make_client_app, partition_phone, run_server
from .partition import PartitionConfig, client_ranks
from .server import ServerConfig
from .updates import Layout

__all__ = ["client_app", "node_config", "node_config_arg", "phone_from_node_config", "server_app", "server_run_config"]

ROUNDS_FILE = "rounds.json"


def node_config(bundle: str | Path, data: str, client: str | None, tier: int | None, tiers: tuple[int, ...],
                seed: int) -> dict[str, Any]:
    """One phone's node config (read back by :func:`phone_from_node_config`)."""
    return {"bundle": str(Path(bundle).resolve()), "data": str(data), "client": client or "",
            "tier": -1 if tier is None else int(tier), "tiers": ",".join(str(t) for t in tiers), "seed": int(seed)}


def node_config_arg(config: dict[str, Any]) -> str:
    """``config`` as ``flower-supernode --node-config`` takes it: ``key=value`` pairs, TOML values."""
    parts = []
    for key, value in config.items():
        if isinstance(value, str):
            if '"' in value:
                raise ConfigError(f"{key} {value!r} contains a double quote, which Flower's node config cannot "
                                  "carry; rename or move it.")
            value = json.dumps(value)  # a TOML basic string
        parts.append(f"{key}={value}")
    return " ".join(parts)


@functools.lru_cache(maxsize=4)
def _phone(bundle: str, data: str, client: str, tier: int, tiers: str, seed: int) -> Phone:
    try:
        tier_ranks = tuple(int(x) for x in tiers.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"tiers {tiers!r}: expected comma-separated whole numbers, e.g. 2,4,6.") from None
    partition = PartitionConfig(tier_ranks=tier_ranks, seed=seed)
    kind, _, value = data.partition(":")
    if kind == "fleet":
        try:
            index = int(value)
        except ValueError:
            raise ConfigError(f"--data {data!r}: expected fleet:<client index>, e.g. fleet:3.") from None
        return partition_phone(bundle, partition, index, client or f"fleet-{index}", None if tier < 0 else tier)
    from mobile_peft.runtime.bundle import Bundle

    layout = Layout.from_trainable(Bundle.open(bundle, verify=False).trainable)
    examples = load_dataset(data, "train", seed=seed)
    ranks = client_ranks(layout, max(tier, 0), partition)
    return Phone(client or data, bundle, tuple(examples), ranks, seed * 1_000_003)


def phone_from_node_config(config: Any) -> Phone:
    """The :class:`~.apps.Phone` a SuperNode's ``--node-config`` describes (cached per process)."""
    missing = [k for k in ("bundle", "data") if k not in config]
    if missing:
        raise ConfigError(f"the SuperNode's --node-config lacks {missing}; start phones with `mobile-peft fleet join`.")
    return _phone(str(config["bundle"]), str(config["data"]), str(config.get("client", "")),
                  int(config.get("tier", -1)), str(config.get("tiers", "2,4,6")), int(config.get("seed", 0)))


def server_run_config(bundle: str | Path, server: ServerConfig, clients: int, out: str | Path, adapter: bool,
                      wait_seconds: float) -> dict[str, Any]:
    """The run config of one ``fleet serve`` run (TOML scalars; read back by :data:`server_app`)."""
    return {
        "bundle": str(Path(bundle).resolve()), "rule": server.rule, "rounds": server.rounds,
        "fraction": float(server.fraction), "min-clients": server.min_clients, "local-steps": server.local_steps,
        "lr": float(server.lr or 0.0), "uniform-rank": -1 if server.uniform_rank is None else server.uniform_rank, "schedule": server.schedule,
        "round-timeout": float(server.round_timeout), "seed": server.seed, "clients": clients,
        "wait-seconds": float(wait_seconds), "out": str(Path(out).resolve()), "adapter": bool(adapter),
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def _server_main(grid: Any, context: Any) -> None:
    from mobile_peft.runtime.adapter import write_adapter
    from mobile_peft.runtime.bundle import Bundle

    cfg = context.run_config
    uniform = int(cfg["uniform-rank"])
    server = ServerConfig(
        rule=str(cfg["rule"]), rounds=int(cfg["rounds"]), fraction=float(cfg["fraction"]),
        min_clients=int(cfg["min-clients"]), local_steps=int(cfg["local-steps"]), lr=float(cfg["lr"]) or None,
        uniform_rank=None if uniform < 0 else uniform, round_timeout=float(cfg["round-timeout"]),
        schedule=str(cfg["schedule"]), seed=int(cfg["seed"]),
    )
    out = Path(str(cfg["out"]))
    out.mkdir(parents=True, exist_ok=True)
    setup = FleetSetup(str(cfg["bundle"]), PartitionConfig(), (server,), int(cfg["clients"]),
                       wait_seconds=float(cfg["wait-seconds"]))
    started = time.perf_counter()
    rounds: list[dict[str, Any]] = []

    def summary(complete: bool, adapter_dir: str | None = None) -> dict[str, Any]:
        return {"complete": complete, "registered": setup.result.get("registered", 0), "rounds": rounds,
                "seconds": round(time.perf_counter() - started, 2), "adapter_dir": adapter_dir}

    def on_round(config: ServerConfig, report: Any) -> None:
        rounds.append(report.as_dict())
        _write_json(out / ROUNDS_FILE, summary(False))

    (fleet,) = run_server(grid, setup, on_round)
    adapter_dir = None
    if bool(cfg["adapter"]):
        bundle = Bundle.open(setup.bundle)
        masks = bundle.schedule.input_masks(fleet.layout.full_ranks())
        adapter_dir = str(write_adapter(bundle, fleet.params, masks, out))
    _write_json(out / ROUNDS_FILE, summary(True, adapter_dir))


def _make_server_app():  # noqa: ANN202
    from flwr.serverapp import ServerApp

    app = ServerApp()
    app.main()(_server_main)
    return app


server_app = _make_server_app()
client_app = make_client_app(lambda context: phone_from_node_config(context.node_config))
