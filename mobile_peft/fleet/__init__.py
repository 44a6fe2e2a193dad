"""Fleet personalisation on Flower: aggregate rank-heterogeneous adapters from many phones.

* :mod:`.updates` -- the adapter slices that travel, :mod:`.rules` -- aggregation rules
  (``rank-aware``, ours; ``fedavg``, ``hetlora``, ``flexlora`` baselines), :mod:`.robust` --
  screening hostile updates, :mod:`.partition` -- non-IID digits clients and device ranks,
  :mod:`.server` -- the round logic: numpy and the core only;
* :mod:`.client` -- a phone's local round on the on-device runtime (no torch);
* :mod:`.apps` / :mod:`.simulate` / :mod:`.deploy_apps` / :mod:`.deploy` -- the Flower ``ServerApp`` /
  ``ClientApp``, on the simulation engine or as real processes (a SuperLink and SuperNodes; the
  ``fleet`` extra: ``pip install 'mobile-peft[fleet]'``);
* :mod:`.bench` -- the benchmark (``mobile-peft fleet simulate --bench``).

Importing this package imports neither Flower nor a runtime library.
"""

from __future__ import annotations

from .partition import ClientData, PartitionConfig, client_data, client_ranks
from .robust import Rejection, ScreenConfig, screen_updates
from .rules import RULES, AggregationRule, get_rule
from .server import FleetServer, RoundReport, ServerConfig
from .updates import Layout, Update

__all__ = [
    "RULES",
    "AggregationRule",
    "ClientData",
    "FleetServer",
    "Layout",
    "PartitionConfig",
    "Rejection",
    "RoundReport",
    "ScreenConfig",
    "ServerConfig",
    "Update",
    "client_data",
    "client_ranks",
    "get_rule",
    "screen_updates",
]
