"""The server's round logic, independent of the engine (Flower's simulation or a SuperLink deployment).

Per round: sample ``fraction`` of the registered clients (seeded), send each the prefix slices of
the global adapter at the ranks the server assigns it (the ranks its device declared, uniform ones
for the FedAvg baseline, or :mod:`.schedule`'s per-module schedule within the declared ranks'
parameters), collect replies until the round's timeout,
screen them (:mod:`.robust`), aggregate the accepted ones with the rule (:mod:`.rules`). A round
with no accepted update keeps the global adapter (nothing is lost, the next round retries); a
client that failed, dropped or answered late is recorded, never waited for past the timeout.
Bytes are counted from the payloads that actually travelled (the transport reports them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mobile_peft.core.errors import ConfigError
from mobile_peft.core.schedule import Ranks

from .robust import Rejection, ScreenConfig, screen_updates
from .rules import get_rule
from .schedule import SCHEDULES, SpectralSchedule
from .updates import Layout, Update

__all__ = ["FleetServer", "RoundReport", "ServerConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    rule: str = "rank-aware"
    rounds: int = 10
    fraction: float = 0.1
    min_clients: int = 2
    local_steps: int = 10
    lr: float | None = None
    uniform_rank: int | None = None  # every client trains this rank (FedAvg's setting)
    schedule: str = "declared"  # or "spectral": see .schedule
    round_timeout: float = 600.0
    seed: int = 0
    screen: ScreenConfig = field(default_factory=ScreenConfig)

    def __post_init__(self) -> None:
        get_rule(self.rule)
        if self.rounds < 1:
            raise ConfigError(f"rounds={self.rounds}; expected >= 1.")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction={self.fraction}; expected a share of clients in (0, 1], e.g. 0.1.")
        if self.local_steps < 1:
            raise ConfigError(f"local_steps={self.local_steps}; expected >= 1.")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients={self.min_clients}; expected >= 1.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; expected one of {SCHEDULES}.")
        if self.schedule != "declared" and (self.uniform_rank is not None or get_rule(self.rule).uniform_ranks):
            raise ConfigError(f"schedule {self.schedule!r} moves ranks between modules; rule {self.rule!r} with a uniform "
                              "rank cannot follow it. Use --schedule declared, or the rank-aware rule.")
        if get_rule(self.rule).uniform_ranks and self.uniform_rank is None:
            raise ConfigError(f"rule {self.rule!r} averages equal-rank LoRA; give it a uniform rank (--uniform-rank).")


@dataclass
class RoundReport:
    round: int
    sampled: list[str]
    accepted: list[str]
    rejected: list[Rejection]
    failed: list[str]  # errors, dropouts and late replies
    bytes_down: int
    bytes_up: int
    mean_loss: float | None

    @property
    def lost(self) -> bool:
        """A round that produced no new global adapter."""
        return not self.accepted

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "sampled": len(self.sampled),
            "accepted": len(self.accepted),
            "rejected": [r.as_dict() for r in self.rejected],
            "failed": self.failed,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "mean_loss": self.mean_loss,
        }


class FleetServer:
    def __init__(self, layout: Layout, initial: dict[str, np.ndarray], config: ServerConfig) -> None:
        self.layout = layout
        self.config = config
        self.rule = get_rule(config.rule)
        self.params = {k: np.array(v, dtype=np.float32) for k, v in initial.items()}
        self.declared: dict[str, Ranks] = {}  # registered client -> the ranks its device declared
        self.clients: dict[str, Ranks] = {}  # registered client -> the ranks the server assigns it next
        self.reports: list[RoundReport] = []
        self.schedule = SpectralSchedule(layout) if config.schedule == "spectral" else None

    def register(self, client: str, ranks: Ranks) -> None:
        """A client joins with its device's ranks (ignored when the rule trains a uniform rank)."""
        if self.config.uniform_rank is not None:
            ranks = self.layout.uniform_ranks(self.config.uniform_rank)
        self.declared[client] = ranks
        self.clients[client] = self.schedule.ranks(ranks) if self.schedule is not None else ranks

    def sample(self, round_: int) -> list[str]:
        names = sorted(self.clients)
        if not names:
            raise ConfigError("no client has registered; start clients (`mobile-peft fleet join`) first.")
        k = min(len(names), max(self.config.min_clients, int(round(self.config.fraction * len(names)))))
        rng = np.random.default_rng([self.config.seed, round_])
        return [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]

    def instructions(self, client: str) -> tuple[dict[str, np.ndarray], Ranks]:
        """What ``client`` receives: the global slices at its ranks, and those ranks."""
        ranks = self.clients[client]
        return self.layout.slice_params(self.params, ranks), ranks

    def finish_round(
        self, round_: int, sampled: list[str], updates: list[Update], failed: list[str], bytes_down: int, bytes_up: int
    ) -> RoundReport:
        required = {c: self.clients[c] for c in sampled} if self.rule.uniform_ranks else None
        foreign = [u for u in updates if u.client not in sampled]
        updates = [u for u in updates if u.client in sampled]
        accepted, rejected = screen_updates(self.layout, self.params, updates, self.config.screen, required)
        rejected += [Rejection(u.client, "was not sampled this round") for u in foreign]
        if accepted:
            rng = np.random.default_rng([self.config.seed, round_, 7])
            before, self.params = self.params, self.rule.aggregate(self.layout, self.params, accepted, rng)
            if self.schedule is not None:
                self.schedule.observe(before, self.params)
                self.clients = {c: self.schedule.ranks(r) for c, r in self.declared.items()}
        losses = [u.metrics["loss"] for u in accepted if u.metrics.get("loss") is not None]
        report = RoundReport(
            round_, sampled, [u.client for u in accepted], rejected, failed, bytes_down, bytes_up,
            float(np.mean(losses)) if losses else None,
        )
        for r in rejected:
            logger.warning("round %d: refused the update of client %s: %s", round_, r.client, r.reason)
        if failed:
            logger.info("round %d: no reply from %s (failed, dropped out or late)", round_, failed)
        self.reports.append(report)
        return report
