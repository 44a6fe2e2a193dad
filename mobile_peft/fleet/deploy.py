"""``fleet serve`` / ``fleet join``: the fleet as real processes on Flower's deployment engine.

``fleet serve BUNDLE --address HOST:PORT`` starts a SuperLink on that address (its Fleet and
Control APIs share the port), writes a Flower App whose components are :mod:`.deploy_apps`'s
``server_app`` and ``client_app`` -- the simulation's apps, with the run's settings in the run
config -- submits it with ``flwr run``, follows the run until it finishes (printing each round as
the ``ServerApp`` writes it to ``<out>/rounds.json``), then stops the SuperLink.
``fleet join BUNDLE --data ... --server HOST:PORT`` starts one SuperNode whose ``--node-config``
says which phone it is (:func:`~.deploy_apps.node_config`); its ``ClientApp`` trains the bundle
with the on-device runtime. A phone stays while its SuperLink is up and leaves when it is gone.

Everything runs from this environment: the children find Flower's executables beside this
Python, no app dependency is installed at run time (``--disable-runtime-dependency-installation``)
and nothing is fetched. Flower's own state (its configuration, the FAB) lives in a temporary
``FLWR_HOME`` per command. Transport: plain HTTP (``--insecure``), as the simulation's loopback;
put a TLS terminating proxy in front, or Flower's own certificates, before it leaves a trusted LAN.
Flower's log lines go to files in that directory, or to stderr with ``-v``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mobile_peft.core.errors import ConfigError, MissingExtraError

from .server import ServerConfig

__all__ = ["join", "serve"]

logger = logging.getLogger(__name__)

_CONNECTION = "fleet"
_APP_TOML = """[project]
name = "mobile-peft-fleet"
version = "1.0.0"
description = "mobile-peft fleet: rank-heterogeneous adapters aggregated from phones"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "mobile-peft"

[tool.flwr.app.components]
serverapp = "mobile_peft.fleet.deploy_apps:server_app"
clientapp = "mobile_peft.fleet.deploy_apps:client_app"

[tool.flwr.app.config]
"""


def _executable(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.is_file():
        raise MissingExtraError("flwr", "fleet", f"`mobile-peft fleet` ({name} beside {sys.executable})")
    return str(path)


def _host_port(address: str, flag: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9092.")
    return host.strip("[]"), int(port)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "::") else host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Flower:
    """Flower's executables run as children with a private ``FLWR_HOME`` and their logs in ``work``."""

    def __init__(self, work: Path, verbose: bool) -> None:
        self.work = work
        self.verbose = verbose
        self.children: list[subprocess.Popen] = []
        self.logs: list[Any] = []
        self.env = dict(os.environ)
        self.env["FLWR_HOME"] = str(work / "home")
        # Flower starts its SuperExec, ServerApp and ClientApp processes by name: this environment's.
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), self.env.get("PATH", "")])
        self.env.setdefault("PYTHONWARNINGS", "ignore")
        (work / "home").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = None if self.verbose else (self.work / f"{name}.log").open("ab")
        if log is not None:
            self.logs.append(log)
        child = subprocess.Popen([_executable(argv[0]), *argv[1:]], env=self.env, stdout=log or sys.stderr,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.children.append(child)
        return child

    def call(self, argv: list[str], timeout: float = 120.0) -> dict[str, Any]:
        """A ``flwr`` CLI command with ``--format json``; its JSON reply."""
        done = subprocess.run([_executable("flwr"), *argv, "--format", "json"], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.work)
        try:
            reply = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"`flwr {' '.join(argv)}` answered no JSON: {(done.stdout + done.stderr)[-800:]}") from None
        if not reply.get("success", False):
            raise RuntimeError(f"`flwr {' '.join(argv)}` failed: {reply.get('error-message', reply)}")
        return reply

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else "(run with -v to see Flower's log)"

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for log in self.logs:
            log.close()


def _app_dir(work: Path, run_config: dict[str, Any]) -> Path:
    import tomli_w

    app = work / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(_APP_TOML + tomli_w.dumps(run_config))
    return app


def _follow(out: Path, seen: int, on_round: Callable[[dict[str, Any]], None] | None) -> int:
    path = out / "rounds.json"
    if on_round is None or not path.is_file():
        return seen
    try:
        rounds = json.loads(path.read_text())["rounds"]
    except (json.JSONDecodeError, KeyError):
        return seen
    for report in rounds[seen:]:
        on_round(report)
    return max(seen, len(rounds))


def serve(args: argparse.Namespace, on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run a SuperLink and one fleet run on it until ``args.rounds`` rounds are done; the run's summary
    (``rounds``: one report per round, ``registered``, ``seconds``, ``adapter_dir``)."""
    from mobile_peft.runtime.bundle import Bundle

    from .deploy_apps import server_run_config
    from .simulate import quiet_flower

    quiet_flower(getattr(args, "verbose", False))
    host, port = _host_port(args.address, "--address")
    Bundle.open(args.bundle)  # a bad bundle fails here, with its own message, before any process starts
    if _reachable(host, port):
        raise ConfigError(f"--address {args.address}: something already listens there; choose a free port.")
    config = ServerConfig(rule=args.rule, rounds=args.rounds, fraction=args.fraction, min_clients=min(2, args.clients),
                          local_steps=args.local_steps, uniform_rank=args.uniform_rank, round_timeout=args.round_timeout,
                          schedule=getattr(args, "schedule", "declared"), seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="mobile-peft-fleet-") as tmp:
        work = Path(tmp)
        out = Path(args.out) if args.out is not None else work / "result"
        flower = _Flower(work, getattr(args, "verbose", False))
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        (work / "home" / "config.toml").write_text(
            f'[superlink]\ndefault = "{_CONNECTION}"\n\n[superlink.{_CONNECTION}]\n'
            f'address = "{connect}:{port}"\ninsecure = true\n'
        )
        app = _app_dir(work, server_run_config(args.bundle, config, args.clients, out, args.out is not None,
                                               args.wait_seconds))
        try:
            link = flower.start("superlink", ["flower-superlink", "--insecure", "--host", host, "--port", str(port),
                                              "--disable-runtime-dependency-installation"])
            deadline = time.monotonic() + 60
            while not _reachable(host, port):
                if link.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the SuperLink did not come up on {args.address}:\n{flower.log_tail('superlink')}")
                time.sleep(0.2)
            run_id = flower.call(["run", str(app), _CONNECTION])["run-id"]
            logger.info("fleet run %s started on %s", run_id, args.address)
            limit = args.wait_seconds + args.rounds * (args.round_timeout + 60) + 120
            deadline, seen, status = time.monotonic() + limit, 0, ""
            while True:
                seen = _follow(out, seen, on_round)
                (run,) = flower.call(["ls", "--run-id", str(run_id)])["runs"]
                status = str(run["status"])
                if status.startswith("finished"):
                    break
                if link.poll() is not None:
                    raise RuntimeError(f"the SuperLink stopped during the run:\n{flower.log_tail('superlink')}")
                if time.monotonic() > deadline:
                    flower.call(["stop", str(run_id)])
                    raise RuntimeError(f"fleet run {run_id} did not finish in {limit:.0f} s; stopped it.")
                time.sleep(1.0)
            _follow(out, seen, on_round)
            if status != "finished:completed":
                raise RuntimeError(f"fleet run {run_id} ended {status!r}:\n{flower.log_tail('superlink')}")
            summary = json.loads((out / "rounds.json").read_text())
        finally:
            flower.stop()
    if args.out is None:
        summary["adapter_dir"] = None
    return summary


def join(args: argparse.Namespace) -> dict[str, Any]:
    """Serve as one phone (a SuperNode) while the fleet's SuperLink is up; a summary when it leaves."""
    from .deploy_apps import node_config, node_config_arg, phone_from_node_config
    from .simulate import quiet_flower

    quiet_flower(getattr(args, "verbose", False))
    host, port = _host_port(args.server, "--server")
    config = node_config(args.bundle, args.data, args.client, args.tier, tuple(args.tiers), args.seed)
    phone = phone_from_node_config(config)  # as the ClientApp will read it: bad input fails now, clearly
    argument = node_config_arg(config)
    deadline = time.monotonic() + args.wait_seconds
    while not _reachable(host, port):
        if time.monotonic() > deadline:
            raise ConfigError(f"--server {args.server}: no fleet server answered in {args.wait_seconds:.0f} s; "
                              "start `mobile-peft fleet serve` there first.")
        time.sleep(0.5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mobile-peft-phone-") as tmp:
        flower = _Flower(Path(tmp), getattr(args, "verbose", False))
        try:
            node = flower.start("supernode", ["flower-supernode", "--insecure", "--superlink", f"{host}:{port}",
                                              "--port", str(_free_port()), "--node-config", argument])
            gone_since = None
            while node.poll() is None:
                if _reachable(host, port):
                    gone_since = None
                elif gone_since is None:
                    gone_since = time.monotonic()
                elif time.monotonic() - gone_since > args.linger_seconds:
                    break  # the fleet server has ended: this phone leaves too
                time.sleep(0.5)
            if node.poll() is not None and node.returncode not in (0, -signal.SIGTERM):
                raise RuntimeError(f"the SuperNode stopped ({node.returncode}):\n{flower.log_tail('supernode')}")
        finally:
            flower.stop()
    return {"client": phone.name, "examples": len(phone.examples), "seconds": round(time.perf_counter() - started, 2)}
