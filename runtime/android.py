"""Profile a bundle on a running Android emulator or device over ``adb``.

What it does (``mobile-peft profile BUNDLE --emulator``): push the bundle and a runner to
``/data/local/tmp``, start training steps there, sample ``dumpsys meminfo <pid>`` while they
run, pull the runner's results. It cannot run on a machine without adb and a device, so the
pieces are small and the parser is unit-tested against ``dumpsys meminfo`` text.

``dumpsys meminfo`` prints kilobytes; this module returns bytes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mobile_peft.core.errors import ConfigError, MobilePeftError

REMOTE_DIR = "/data/local/tmp/mobile_peft"

_SUMMARY_KEYS = {
    "Java Heap": "java_heap",
    "Native Heap": "native_heap",
    "Code": "code",
    "Stack": "stack",
    "Graphics": "graphics",
    "Private Other": "private_other",
    "System": "system",
}


@dataclass(frozen=True)
class MemInfo:
    """One ``dumpsys meminfo`` sample of a process, in bytes."""

    pid: int | None
    process: str | None
    total_pss: int
    total_rss: int | None
    native_heap_pss: int | None
    summary: dict[str, int] = field(default_factory=dict)


def _kb(text: str) -> int:
    return int(text) * 1024


def parse_meminfo(text: str) -> MemInfo:
    """Parse the output of ``dumpsys meminfo <pid|package>``.

    Handles the App Summary block of Android 6+ (``TOTAL PSS: n  TOTAL RSS: n ...`` or, on older
    releases, ``TOTAL: n``) and falls back to the ``TOTAL`` row of the main table.
    """
    header = re.search(r"\*\* MEMINFO in pid (\d+) \[([^\]]+)\] \*\*", text)
    summary: dict[str, int] = {}
    for label, key in _SUMMARY_KEYS.items():
        m = re.search(rf"^\s*{re.escape(label)}:\s+(\d+)", text, re.MULTILINE)
        if m:
            summary[key] = _kb(m.group(1))
    pss = re.search(r"TOTAL PSS:\s+(\d+)", text) or re.search(r"^\s*TOTAL:\s+(\d+)", text, re.MULTILINE)
    rss = re.search(r"TOTAL RSS:\s+(\d+)", text)
    if pss is None:
        row = re.search(r"^\s*TOTAL\s+(\d+)", text, re.MULTILINE)
        if row is None:
            raise MobilePeftError(
                "dumpsys meminfo output has no TOTAL PSS line nor TOTAL row; is the process still running? "
                f"First line: {text.strip().splitlines()[0] if text.strip() else '(empty)'!r}"
            )
        pss = row
    native = re.search(r"^\s*Native Heap\s+(\d+)", text, re.MULTILINE)
    return MemInfo(
        pid=int(header.group(1)) if header else None,
        process=header.group(2) if header else None,
        total_pss=_kb(pss.group(1)),
        total_rss=_kb(rss.group(1)) if rss else None,
        native_heap_pss=_kb(native.group(1)) if native else None,
        summary=summary,
    )


Runner = Callable[[Sequence[str]], str]


def _subprocess_runner(args: Sequence[str]) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=600).stdout


@dataclass
class AdbDevice:
    """A thin ``adb`` wrapper; ``run`` is injectable so tests replay recorded output."""

    serial: str | None = None
    run: Runner = _subprocess_runner

    @classmethod
    def connect(cls, serial: str | None = None) -> AdbDevice:
        if shutil.which("adb") is None:
            raise ConfigError(
                "--emulator needs `adb` on PATH and a running emulator or device (Android SDK platform-tools); "
                "none found. Profile on the host instead (omit --emulator)."
            )
        device = cls(serial)
        state = device.adb("get-state").strip()
        if state != "device":
            raise ConfigError(
                f"adb reports state {state!r}; start an emulator (emulator -avd NAME) or plug in a device."
            )
        return device

    def adb(self, *args: str) -> str:
        prefix = ["adb", "-s", self.serial] if self.serial else ["adb"]
        return self.run([*prefix, *args])

    def shell(self, command: str) -> str:
        return self.adb("shell", command)

    def push(self, local: Path, remote: str) -> None:
        self.adb("push", str(local), remote)

    def pull(self, remote: str, local: Path) -> None:
        self.adb("pull", remote, str(local))

    def meminfo(self, pid: int) -> MemInfo:
        return parse_meminfo(self.shell(f"dumpsys meminfo {pid}"))

    def sample_while_running(
        self, pid: int, interval_s: float = 0.5, max_samples: int = 10_000
    ) -> list[MemInfo]:
        """``dumpsys meminfo`` every ``interval_s`` until the process exits."""
        samples: list[MemInfo] = []
        while len(samples) < max_samples:
            if not self.shell(f"ls /proc/{pid} >/dev/null 2>&1 && echo alive").strip():
                break
            try:
                samples.append(self.meminfo(pid))
            except MobilePeftError:
                break  # exited between the check and the sample
            time.sleep(interval_s)
        return samples


def peak(samples: Sequence[MemInfo]) -> dict[str, int | None]:
    if not samples:
        raise MobilePeftError("no dumpsys meminfo sample was taken: the runner exited before the first one.")
    rss = [s.total_rss for s in samples if s.total_rss is not None]
    return {
        "peak_pss_bytes": max(s.total_pss for s in samples),
        "peak_rss_bytes": max(rss) if rss else None,
        "samples": len(samples),
    }
