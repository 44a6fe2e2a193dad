"""Device profiles (RAM, the memory one app may use, cores, big-core clock) as data.

The phone profiles live in ``devices.json`` beside this module, each with its sources and a note
on how the app budget was estimated; ``host`` is read from this machine at run time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from mobile_peft.core.errors import ConfigError

HOST = "host"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    display_name: str
    os: str
    ram_bytes: int
    app_budget_bytes: int
    app_budget_note: str
    cpu_cores: int
    big_cores: int
    big_core_ghz: float | None
    soc: str
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def training_threads(self) -> int:
        """Threads a training step should use: the big (performance) cores, at least one."""
        return max(1, self.big_cores)

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _phone_profiles() -> dict[str, DeviceProfile]:
    raw = json.loads(resources.files(__package__).joinpath("devices.json").read_text())
    return {
        name: DeviceProfile(name=name, **{**p, "sources": tuple(p["sources"])})
        for name, p in raw["profiles"].items()
    }


def _meminfo_bytes(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def host_profile() -> DeviceProfile:
    """This machine: total RAM and what is available now (the budget), usable cores."""
    ram = _meminfo_bytes("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = _meminfo_bytes("MemAvailable") or ram
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return DeviceProfile(
        name=HOST,
        display_name=f"this machine ({os.uname().machine})",
        os=os.uname().sysname.lower(),
        ram_bytes=ram,
        app_budget_bytes=available,
        app_budget_note="MemAvailable from /proc/meminfo when profiled.",
        cpu_cores=cores,
        big_cores=cores,
        big_core_ghz=None,
        soc=os.uname().machine,
        sources=("/proc/meminfo", "sched_getaffinity"),
    )


def device_names() -> list[str]:
    return [HOST, *sorted(_phone_profiles())]


def get_device(name: str) -> DeviceProfile:
    if name == HOST:
        return host_profile()
    profiles = _phone_profiles()
    if name not in profiles:
        raise ConfigError(f"unknown device {name!r}; expected one of {device_names()}.")
    return profiles[name]
