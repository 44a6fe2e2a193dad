"""The Flower apps: a ``ServerApp`` running :class:`~.server.FleetServer` and a ``ClientApp`` whose
training is :class:`~.client.LocalTrainer` (the on-device runtime on a bundle).

Messages (Flower's records; arrays travel as ``ArrayRecord`` -- numpy's ``.npy`` bytes,
``allow_pickle=False`` -- never pickled objects):

* ``query`` (server -> every node, once): reply ``ConfigRecord {"client", "ranks"}``: who the
  node is and the per-module ranks its device trains (its tier);
* ``train``: ``ArrayRecord`` of the global slices at the client's ranks + ``ConfigRecord
  {"ranks", "steps", "round"}``; reply: the trained slices, ``ConfigRecord {"client", "ranks"}``
  (the ranks it actually trained) and ``MetricRecord {"examples", "loss"}``.

Bytes per round are ``ArrayRecord.count_bytes()`` of what was sent and received.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .partition import PartitionConfig, client_data, client_ranks
from .server import FleetServer, ServerConfig
from .updates import Layout, Update, ranks_from_json, ranks_to_json

__all__ = ["FaultPlan", "FleetSetup", "make_client_app", "make_server_app"]

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
    client_index: int | None = None  # a real process (`fleet join`) knows its index itself
    wait_seconds: float = 300.0  # for the nodes to come up and answer the registration query
    result: dict[str, Any] = field(default_factory=dict)


def _trainer(setup: FleetSetup):  # noqa: ANN202
    from mobile_peft.runtime.bundle import Bundle

    from .client import LocalTrainer

    if setup.bundle not in _TRAINERS:
        _TRAINERS[setup.bundle] = LocalTrainer(Bundle.open(setup.bundle))
    return _TRAINERS[setup.bundle]


def _layout(setup: FleetSetup) -> Layout:
    from mobile_peft.runtime.bundle import Bundle

    return Layout.from_trainable(Bundle.open(setup.bundle, verify=False).trainable)


def _index(setup: FleetSetup, context: Any) -> int:
    if setup.client_index is not None:
        return setup.client_index
    return int(context.node_config["partition-id"])


def _arrays(record: Any) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _record(tensors: dict[str, np.ndarray]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in tensors.items()})


def _apply_fault(kind: str, tensors: dict[str, np.ndarray], ranks: dict, layout: Layout, setup: FleetSetup):  # noqa: ANN202
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
        time.sleep(setup.faults.late_seconds)
    return tensors, ranks


def make_client_app(setup: FleetSetup):  # noqa: ANN201
    from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        index = _index(setup, context)
        ranks = client_ranks(_layout(setup), index, setup.partition)
        return Message(RecordDict({"config": ConfigRecord({"client": str(index), "ranks": ranks_to_json(ranks)})}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        index = _index(setup, context)
        trainer = _trainer(setup)
        config = msg.content["config"]
        ranks = ranks_from_json(str(config["ranks"]))
        data = client_data(index, setup.partition)
        seed = int(setup.partition.seed) * 1_000_003 + int(config["round"]) * 10_007 + index
        lr = float(config["lr"]) if float(config["lr"]) > 0 else None
        result = trainer.fit(_arrays(msg.content["arrays"]), ranks, data.train, int(config["steps"]), seed=seed, lr=lr)
        tensors, ranks = result.tensors, result.ranks
        if index in setup.faults.faults and int(config["round"]) in setup.faults.rounds:
            tensors, ranks = _apply_fault(setup.faults.faults[index], tensors, ranks, trainer.layout, setup)
        loss = float(np.mean(result.losses)) if result.losses else float("nan")
        return Message(RecordDict({
            "arrays": _record(tensors),
            "config": ConfigRecord({"client": str(index), "ranks": ranks_to_json(ranks)}),
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
            declared[client] = ranks_from_json(str(reply.content["config"]["ranks"]))
            node_of[client] = reply.metadata.src_node_id
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
    initial = setup.initial if setup.initial is not None else _trainer(setup).initial()
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
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, setup, on_round)

    return app
