"""Run a fleet on Flower's simulation engine (Ray): ``n_clients`` virtual phones in this machine.

Flower's and Ray's own log lines and warnings are silenced unless ``verbose`` (the CLI owns the
terminal); each virtual client takes one CPU, so on two cores two clients train at a time.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from mobile_peft.core.errors import MissingExtraError

from .apps import FleetSetup, fleet_phone, make_client_app, make_server_app

__all__ = ["quiet_flower", "run_simulation"]

FLOWER_LOGGERS = ("flwr", "ray")


def quiet_flower(verbose: bool = False) -> None:
    """Keep Flower's and Ray's log records and warnings off the terminal (unless ``verbose``)."""
    if verbose:
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
    for name in FLOWER_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL)
        logger.propagate = False
    warnings.filterwarnings("ignore", module="ray")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_simulation(setup: FleetSetup, verbose: bool = False, cpus: int | None = None, on_round: Any = None) -> dict[str, Any]:
    """Run the apps on the simulation engine; returns ``setup.result`` (per run: global params, rounds)."""
    try:
        from flwr.simulation import run_simulation as flower_run
    except ImportError:
        raise MissingExtraError("flwr[simulation]", "fleet", "The fleet simulation") from None
    quiet_flower(verbose)
    cpus = cpus or os.cpu_count() or 1
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose},
    }
    client_app = make_client_app(lambda context: fleet_phone(setup, int(context.node_config["partition-id"])))
    flower_run(make_server_app(setup, on_round), client_app, num_supernodes=setup.n_clients,
               backend_config=backend, verbose_logging=verbose)
    quiet_flower(verbose)  # Flower re-configures its logger on each run
    if len(setup.result.get("runs", [])) != len(setup.servers):
        raise RuntimeError("the fleet simulation ended without a result (run with -v to see Flower's log)")
    return setup.result
