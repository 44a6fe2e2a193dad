"""The Flower apps: a ``ServerApp`` running :class:`~.server.FleetServer` and a ``ClientApp`` whose
training is :class:`~.client.LocalTrainer` (the on-device runtime on a bundle).

One pair of apps for both transports: Flower's simulation engine (:mod:`.simulate`) builds them
around a :class:`FleetSetup` in this process; a deployment (:mod:`.deploy`: a SuperLink, one
SuperNode per phone, ``flwr run``) loads the same handlers from :mod:`.deploy_apps`, where each
node says who it is through its ``--node-config`` and the run's settings come from the run config.

Messages (Flower's records; arrays travel as ``ArrayRecord`` -- numpy's ``.npy`` bytes,
``allow_pickle=False`` -- never pickled objects):

* ``query`` (server -> every node, once): reply ``ConfigRecord {"client", "ranks"}``: who the
  node is and the per-module ranks its device trains (its tier);
* ``train``: ``ArrayRecord`` of the global slices at the client's ranks + ``ConfigRecord
  {"ranks", "steps", "round", "lr"}``; reply: the trained slices, ``ConfigRecord {"client",
  "ranks"}`` (the ranks it actually trained) and ``MetricRecord {"examples", "loss"}``.

Bytes per round are ``ArrayRecord.count_bytes()`` of what was sent and received.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mobile_peft.core.examples import VQAExample
from mobile_peft.core.schedule import Ranks

from .partition import PartitionConfig, client_data, client_ranks
from .server import FleetServer, ServerConfig
from .updates import Layout, Update, ranks_from_json, ranks_to_json

__all__ = ["FaultPlan", "FleetSetup", "Phone", "fleet_phone", "partition_phone", "make_client_app", "make_server_app", "run_server"]

logger = logging.getLogger(__name__)

QUERY, TRAIN = "query", "train"
_TRAINERS: dict[str, Any] = {}  # one LocalTrainer per bundle per process (Ray actors reuse it)


@dataclass(frozen=True)
class FaultPlan:
    """Misbehaving clients to inject (client index -> kind): ``nan`` (NaN values), ``shape`` (a
    truncated tensor), ``rank`` (claims ranks above ``r_max``), ``norm`` (a 1000x update),
    ``crash`` (raises: a dropout), ``late`` (sleeps ``late_seconds``, past the round timeout),
    in the rounds listed in ``rounds``."""

    faults: dict[int, str] = field(default_factory=dict)
    late_seconds: float = 5.0
    rounds: tuple[int, ...] = (1,)


@dataclass
class FleetSetup:
    bundle: str
    partition: PartitionConfig
    servers: tuple[ServerConfig, ...]  # one run per config, one after the other, on the same clients
    n_clients: int
    initial: dict[str, np.ndarray] | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    wait_seconds: float = 300.0  # for the nodes to come up and answer the registration query
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Phone:
    """One node as its ``ClientApp`` sees itself: its name, the bundle it trains, its local
    examples, the ranks its device trains, the base of its per-round seeds, and (simulation only)
    the fault it is told to commit."""

    name: str
    bundle: str
    examples: tuple[VQAExample, ...]
    ranks: Ranks
    seed: int = 0
    fault: str | None = None
    fault_rounds: tuple[int, ...] = ()
    late_seconds: float = 5.0

    def round_seed(self, round_: int) -> int:
        return self.seed + round_ * 10_007


def partition_phone(bundle: str, partition: PartitionConfig, index: int, name: str, tier: int | None = None) -> Phone:
    """Client ``index`` of the embedded non-IID digits fleet (:mod:`.partition`): its train
    examples, its tier's ranks (or tier ``tier``'s), and its seeds."""
    data = client_data(index, partition)
    ranks = client_ranks(_layout(bundle), index if tier is None else tier, partition)
    return Phone(name, bundle, tuple(data.train), ranks, int(partition.seed) * 1_000_003 + index)


def fleet_phone(setup: FleetSetup, index: int) -> Phone:
    """Client ``index`` of ``setup``'s simulated fleet, with the fault it is told to commit."""
    phone = partition_phone(setup.bundle, setup.partition, index, str(index))
    fault = setup.faults.faults.get(index)
    if fault is None:
        return phone
    return dataclasses.replace(phone, fault=fault, fault_rounds=setup.faults.rounds, late_seconds=setup.faults.late_seconds)


def _trainer(bundle: str):  # noqa: ANN202
    from mobile_peft.runtime.bundle import Bundle

    from .client import LocalTrainer

    if bundle not in _TRAINERS:
        _TRAINERS[bundle] = LocalTrainer(Bundle.open(bundle))
    return _TRAINERS[bundle]


@functools.lru_cache(maxsize=8)
def _layout(bundle: str) -> Layout:
    from mobile_peft.runtime.bundle import Bundle

    return Layout.from_trainable(Bundle.open(bundle, verify=False).trainable)


def _arrays(record: Any) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _record(tensors: dict[str, np.ndarray]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in tensors.items()})


def _apply_fault(kind: str, tensors: dict[str, np.ndarray], ranks: dict, layout: Layout, late_seconds: float):  # noqa: ANN202
    tensors = {k: np.array(v) for k, v in tensors.items()}
    name = sorted(tensors)[0]
    if kind == "nan":
        tensors[name].flat[0] = np.nan
    elif kind == "shape":
        tensors[name] = tensors[name][..., :-1]
    elif kind == "rank":
        module, slot = layout.slots[0]
        ranks = {m: dict(s) for m, s in ranks.items()}
        ranks[module][slot] = layout.r_max((module, slot)) + 4
    elif kind == "norm":
        tensors = {k: v * 1000.0 for k, v in tensors.items()}
    elif kind == "crash":
        raise RuntimeError("injected fault: the client dropped out")
    elif kind == "late":
        time.sleep(late_seconds)
    return tensors, ranks


def make_client_app(phone_of: Callable[[Any], Phone]):  # noqa: ANN201
    """The ``ClientApp``; ``phone_of(context)`` says which phone this node is."""
    from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        phone = phone_of(context)
        return Message(RecordDict({"config": ConfigRecord({"client": phone.name, "ranks": ranks_to_json(phone.ranks)})}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        phone = phone_of(context)
        trainer = _trainer(phone.bundle)
        config = msg.content["config"]
        round_ = int(config["round"])
        ranks = ranks_from_json(str(config["ranks"]))
        lr = float(config["lr"]) if float(config["lr"]) > 0 else None
        result = trainer.fit(_arrays(msg.content["arrays"]), ranks, list(phone.examples), int(config["steps"]),
                             seed=phone.round_seed(round_), lr=lr)
        tensors, ranks = result.tensors, result.ranks
        if phone.fault is not None and round_ in phone.fault_rounds:
            tensors, ranks = _apply_fault(phone.fault, tensors, ranks, trainer.layout, phone.late_seconds)
        loss = float(np.mean(result.losses)) if result.losses else float("nan")
        logger.info("round %d: %s trained %d steps, loss %.4f", round_, phone.name, int(config["steps"]), loss)
        return Message(RecordDict({
            "arrays": _record(tensors),
            "config": ConfigRecord({"client": phone.name, "ranks": ranks_to_json(ranks)}),
            "metrics": MetricRecord({"examples": result.examples, "loss": loss}),
        }), reply_to=msg)

    return app


def _update(reply: Any) -> Update:
    """An Update from a reply (anything missing or mistyped raises; the caller records why)."""
    config, metrics = reply.content["config"], reply.content["metrics"]
    loss = float(metrics["loss"])
    return Update(
        str(config["client"]), _arrays(reply.content["arrays"]), ranks_from_json(str(config["ranks"])),
        metrics["examples"], {"loss": loss if np.isfinite(loss) else None},
    )


def _wait_for_nodes(grid: Any, setup: FleetSetup) -> list[int]:
    deadline = time.monotonic() + setup.wait_seconds
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= setup.n_clients or time.monotonic() > deadline:
            return nodes
        time.sleep(0.1)


def _register_all(grid: Any, setup: FleetSetup) -> tuple[dict[str, int], dict[str, Any]]:
    """Ask every node who it is and which ranks its device trains: (client -> node, client -> ranks)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    nodes = _wait_for_nodes(grid, setup)
    queries = [Message(RecordDict({"config": ConfigRecord({"ask": "identity"})}), dst_node_id=n, message_type=QUERY)
               for n in nodes]
    node_of: dict[str, int] = {}
    declared: dict[str, Any] = {}
    # The first message of each node loads the runtime: give registration the start-up time.
    for reply in grid.send_and_receive(queries, timeout=setup.wait_seconds):
        if reply.has_error():
            continue
        try:
            client = str(reply.content["config"]["client"])
            ranks = ranks_from_json(str(reply.content["config"]["ranks"]))
            if client in node_of:  # two phones under one name: the first keeps it, the second takes no part
                logger.warning("node %s registered as %r, which node %s already is; it takes no part (give each "
                               "phone its own --client name)", reply.metadata.src_node_id, client, node_of[client])
                continue
            declared[client], node_of[client] = ranks, reply.metadata.src_node_id
        except Exception as exc:  # an unreadable registration: that node just does not take part
            logger.warning("node %s sent an unreadable registration (%s)", reply.metadata.src_node_id, exc)
    return node_of, declared


def _one_round(grid: Any, server: FleetServer, round_: int, node_of: dict[str, int]) -> Any:
    from flwr.app import ConfigRecord, Message, RecordDict

    config = server.config
    sampled = server.sample(round_)
    messages, bytes_down = [], 0
    for client in sampled:
        tensors, ranks = server.instructions(client)
        arrays = _record(tensors)
        bytes_down += arrays.count_bytes()
        settings = ConfigRecord({"ranks": ranks_to_json(ranks), "steps": config.local_steps, "round": round_,
                                 "lr": float(config.lr or 0.0)})
        messages.append(Message(RecordDict({"arrays": arrays, "config": settings}), dst_node_id=node_of[client],
                                message_type=TRAIN))
    replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
    updates, failed, bytes_up, answered = [], [], 0, set()
    client_of = {node: client for client, node in node_of.items()}
    for reply in replies:
        client = client_of.get(reply.metadata.src_node_id, f"node-{reply.metadata.src_node_id}")
        answered.add(client)
        if reply.has_error():
            failed.append(client)
            continue
        try:
            bytes_up += reply.content["arrays"].count_bytes()
            update = _update(reply)
            update.client = client  # the node it came from, whatever it claims
            updates.append(update)
        except Exception as exc:  # a malformed reply is refused like a malformed update
            logger.warning("round %d: unreadable reply from client %s (%s)", round_, client, exc)
            failed.append(client)
    failed += [c for c in sampled if c not in answered]
    return server.finish_round(round_, sampled, updates, failed, bytes_down, bytes_up)


def run_server(grid: Any, setup: FleetSetup, on_round: Any = None) -> list[FleetServer]:
    """The server's whole run on a Flower grid (simulation or deployment): register the clients
    once, then one federated run per ``setup.servers`` config (results in ``setup.result``)."""
    from mobile_peft.runtime.bundle import Bundle

    bundle = Bundle.open(setup.bundle)
    layout = Layout.from_trainable(bundle.trainable)
    initial = setup.initial if setup.initial is not None else _trainer(setup.bundle).initial()
    node_of, declared = _register_all(grid, setup)
    setup.result["registered"] = len(node_of)
    setup.result["runs"] = []
    servers = []
    for config in setup.servers:
        server = FleetServer(layout, initial, config)
        for client, ranks in declared.items():
            server.register(client, ranks)
        started = time.perf_counter()
        for round_ in range(1, config.rounds + 1):
            report = _one_round(grid, server, round_, node_of)
            if on_round is not None:
                on_round(config, report)
        setup.result["runs"].append({
            "rule": config.rule, "seconds": time.perf_counter() - started, "params": server.params,
            "ranks": dict(server.clients), "rounds": [r.as_dict() for r in server.reports],
        })
        servers.append(server)
    return servers


def make_server_app(setup: FleetSetup, on_round: Any = None):  # noqa: ANN201
    """The ``ServerApp`` of a simulation: :func:`run_server` on ``setup``."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, setup, on_round)

    return app
