"""``fleet serve`` / ``fleet join``: the fleet as real processes talking gRPC (Flower's
``start_server`` / ``start_client`` transport).

The round logic is the simulation's: the server process runs :class:`~.server.FleetServer`
(sampling, per-client rank slices, screening, the aggregation rule) inside a Flower strategy, and
each phone process trains with :class:`~.client.LocalTrainer` (the on-device runtime on the bundle).
Flower's ``start_server`` drives rounds with a per-round timeout, so a phone that drops out or
answers late costs the round nothing but its own update.

Over this transport the arrays travel as Flower ``Parameters`` -- a list of numpy ``.npy``
buffers (``allow_pickle=False``) -- in the order of the tensor names sent beside them in the
config. Bytes per round are the lengths of those buffers, both ways.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.core.datasets import load_dataset
from mobile_peft.core.errors import ConfigError, MissingExtraError

from .partition import PartitionConfig, client_data, client_ranks
from .server import FleetServer, ServerConfig
from .simulate import quiet_flower
from .updates import Layout, Update, ranks_from_json, ranks_to_json

__all__ = ["join", "serve"]

logger = logging.getLogger(__name__)


def _flower() -> Any:
    try:
        import flwr.common as common
    except ImportError:
        raise MissingExtraError("flwr", "fleet", "`mobile-peft fleet serve/join`") from None
    return common


def _pack(tensors: dict[str, np.ndarray]) -> tuple[Any, str, int]:
    common = _flower()
    names = sorted(tensors)
    params = common.ndarrays_to_parameters([np.ascontiguousarray(tensors[n]) for n in names])
    return params, json.dumps(names), sum(len(t) for t in params.tensors)


def _unpack(params: Any, names_json: str) -> tuple[dict[str, np.ndarray], int]:
    common = _flower()
    names = json.loads(names_json)
    arrays = common.parameters_to_ndarrays(params)
    if not isinstance(names, list) or len(names) != len(arrays):
        raise ConfigError(f"{len(arrays)} arrays arrived with {names!r:.80} as their names.")
    return dict(zip((str(n) for n in names), arrays)), sum(len(t) for t in params.tensors)


class _Strategy:
    """A Flower strategy (``flwr.server.strategy.Strategy``) around :class:`FleetServer`."""

    def __init__(self, server: FleetServer, wait_for: int, timeout: float) -> None:
        self.fleet = server
        self.wait_for = wait_for
        self.timeout = timeout
        self.proxies: dict[str, Any] = {}
        self.sent: dict[int, int] = {}

    def initialize_parameters(self, client_manager: Any) -> Any:
        return _flower().ndarrays_to_parameters([])

    def _register(self, client_manager: Any) -> None:
        common = _flower()
        client_manager.wait_for(self.wait_for, timeout=self.timeout)
        for proxy in client_manager.all().values():
            if proxy in self.proxies.values():
                continue
            try:
                res = proxy.get_properties(common.GetPropertiesIns({}), timeout=self.timeout, group_id="register")
                name = str(res.properties["client"])
                self.fleet.register(name, ranks_from_json(str(res.properties["ranks"])))
                self.proxies[name] = proxy
            except Exception as exc:  # an unreadable registration: that phone takes no part
                logger.warning("a phone sent an unreadable registration (%s)", exc)

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list:
        common = _flower()
        self._register(client_manager)
        out, down = [], 0
        self.sampled = self.fleet.sample(server_round)
        for name in self.sampled:
            tensors, ranks = self.fleet.instructions(name)
            params, names, size = _pack(tensors)
            down += size
            config = {"ranks": ranks_to_json(ranks), "names": names, "steps": self.fleet.config.local_steps,
                      "round": server_round, "lr": float(self.fleet.config.lr or 0.0)}
            out.append((self.proxies[name], common.FitIns(params, config)))
        self.sent[server_round] = down
        return out

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[Any, dict]:
        by_proxy = {id(p): n for n, p in self.proxies.items()}
        updates, failed, up = [], [], 0
        for proxy, res in results:
            name = by_proxy.get(id(proxy), str(proxy.cid))
            try:
                tensors, size = _unpack(res.parameters, str(res.metrics["names"]))
                up += size
                loss = float(res.metrics.get("loss", float("nan")))
                updates.append(Update(name, tensors, ranks_from_json(str(res.metrics["ranks"])), res.num_examples,
                                      {"loss": loss if np.isfinite(loss) else None}))
            except Exception as exc:  # a malformed reply is refused like a malformed update
                logger.warning("round %d: unreadable reply from %s (%s)", server_round, name, exc)
                failed.append(name)
        answered = {u.client for u in updates} | set(failed)
        failed += [n for n in self.sampled if n not in answered]
        self.fleet.finish_round(server_round, self.sampled, updates, failed, self.sent.get(server_round, 0), up)
        return _flower().ndarrays_to_parameters([]), {}

    def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Any) -> None:
        return None


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """Run the server until ``args.rounds`` rounds are done; returns the round reports."""
    common = _flower()  # noqa: F841 - fails early with the extra's name
    import flwr.server as fl_server
    from flwr.server.strategy import Strategy

    from mobile_peft.runtime.adapter import write_adapter
    from mobile_peft.runtime.bundle import Bundle

    from .client import LocalTrainer

    quiet_flower(getattr(args, "verbose", False))
    bundle = Bundle.open(args.bundle)
    layout = Layout.from_trainable(bundle.trainable)
    config = ServerConfig(rule=args.rule, rounds=args.rounds, fraction=args.fraction, min_clients=min(2, args.clients),
                          local_steps=args.local_steps, uniform_rank=args.uniform_rank, round_timeout=args.round_timeout,
                          seed=args.seed)
    fleet = FleetServer(layout, LocalTrainer(bundle).initial(), config)
    # Flower's abstract Strategy is imported only here (the extra is optional): mix it in now.
    strategy = type("FleetStrategy", (_Strategy, Strategy), {})(fleet, args.clients, args.round_timeout)
    started = time.perf_counter()
    fl_server.start_server(server_address=args.address, strategy=strategy,
                           config=fl_server.ServerConfig(num_rounds=args.rounds, round_timeout=args.round_timeout))
    summary: dict[str, Any] = {"rounds": [r.as_dict() for r in fleet.reports], "registered": len(fleet.clients),
                               "seconds": round(time.perf_counter() - started, 2), "adapter_dir": None}
    if args.out is not None:
        masks = bundle.schedule.input_masks(layout.full_ranks())
        summary["adapter_dir"] = str(write_adapter(bundle, fleet.params, masks, args.out))
        (Path(args.out) / "rounds.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _local_data(args: argparse.Namespace, layout: Layout) -> tuple[str, list, dict]:
    partition = PartitionConfig(tier_ranks=tuple(int(x) for x in args.tiers.split(",")), seed=args.seed)
    kind, _, value = args.data.partition(":")
    if kind == "fleet":
        try:
            index = int(value)
        except ValueError:
            raise ConfigError(f"--data {args.data!r}: expected fleet:<client index>, e.g. fleet:3.") from None
        data = client_data(index, partition)
        ranks = client_ranks(layout, index if args.tier is None else args.tier, partition)
        return args.client or f"fleet-{index}", data.train, ranks
    examples = load_dataset(args.data, "train", seed=args.seed)
    ranks = client_ranks(layout, args.tier or 0, partition)
    return args.client or args.data, examples, ranks


def join(args: argparse.Namespace) -> None:
    """Serve as one phone until the server ends the run."""
    _flower()
    from flwr.client import NumPyClient
    from flwr.compat.client.app import start_client

    from mobile_peft.runtime.bundle import Bundle

    from .client import LocalTrainer

    quiet_flower(getattr(args, "verbose", False))
    trainer = LocalTrainer(Bundle.open(args.bundle))
    name, examples, ranks = _local_data(args, trainer.layout)
    lock = threading.Lock()

    class Phone(NumPyClient):
        def get_properties(self, config: dict) -> dict:
            return {"client": name, "ranks": ranks_to_json(ranks)}

        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            names = json.loads(str(config["names"]))
            sent = ranks_from_json(str(config["ranks"]))
            lr = float(config["lr"]) if float(config["lr"]) > 0 else None
            with lock:
                result = trainer.fit(dict(zip(names, parameters)), sent, examples, int(config["steps"]),
                                     seed=int(config["round"]) * 10_007 + args.seed, lr=lr)
            out = sorted(result.tensors)
            loss = float(np.mean(result.losses)) if result.losses else float("nan")
            logger.info("round %s: trained %d steps, loss %.4f", config["round"], int(config["steps"]), loss)
            return [result.tensors[n] for n in out], result.examples, {
                "names": json.dumps(out), "ranks": ranks_to_json(result.ranks), "loss": loss}

    start_client(server_address=args.server, client=Phone().to_client(), insecure=True)
