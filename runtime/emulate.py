"""``mobile-peft profile BUNDLE --emulate DEVICE``: train the bundle in a child process held to the
device's app budget and core count, so "fits" is a run that survived, not a sum.

The child is the profile worker (:mod:`._profile_worker` with ``--hold``): it loads the interpreter,
numpy, the runtime library and the encoded batch, prints ``ready`` and waits. Only then is it held
to the budget, so the budget applies to what the bundle costs -- loading it and training -- exactly
what ``mobile-peft profile`` reports as peak growth (this host's Python and libraries stand for the
app's own code, which a phone has too but far smaller). Then it trains ``steps`` steps, printing
``step N`` after each.

How the child is held, the first that works:

* **cgroup v1 memory controller** (``cgroup-v1``): a new group ``mobile-peft-emulate-<pid>`` under
  this process's own memory cgroup (or the root one) with ``memory.limit_in_bytes`` (and
  ``memory.memsw.limit_in_bytes`` where swap accounting exists, so the child cannot swap instead)
  set to the budget; the child's pid is written to its ``cgroup.procs`` at ``ready``. What it held
  before stays charged to the old group, so the group's usage is the bundle's growth (the
  bundle's files are dropped from the page cache first, so the pages of them it maps are charged
  to it too: :func:`_drop_from_page_cache`); past the
  budget the kernel's OOM killer ends it (SIGKILL, exit 137). The peak reached is
  ``memory.max_usage_in_bytes``; ``memory.oom_control``'s ``oom_kill`` counts the kills
  (``memory.failcnt``, the charges refused at the limit, stayed 0 on this kernel even for a killed
  child). The group is removed afterwards (a parent killed mid-run leaves its group, named with
  its pid, behind: ``rmdir`` it; its child exits once the parent's end of the pipe closes). Needs write access to ``/sys/fs/cgroup/memory`` (root here).
* **RLIMIT_AS** (``rlimit-as``): ``prlimit`` on the child, its virtual size at ``ready`` plus the
  budget. Virtual memory counts reservations never touched (thread stacks, allocator arenas,
  mapped files), so this is stricter than the budget: a "does not fit" under it may fit a phone;
  a "fits" holds. The child fails with an allocation error instead of being killed.

Cores: the child is pinned to the device's big-core count (``sched_setaffinity``, capped by this
host's cores) and the thread pools are sized to it (``OMP_NUM_THREADS`` and friends, ExecuTorch's
thread pool).
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobile_peft.core.errors import ConfigError, MobilePeftError

from .bundle import Bundle
from .devices import get_device
from .profile import ratio_to_bound

__all__ = ["LIMITERS", "emulate_bundle"]

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
LIMITERS = ("auto", "cgroup-v1", "rlimit-as")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_READY_TIMEOUT_S = 300.0


def _own_cgroup() -> Path:
    """This process's memory cgroup directory (v1), or the root when it cannot be read."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return CGROUP_ROOT / path.lstrip("/")
    except (OSError, ValueError):
        pass
    return CGROUP_ROOT


def _status_bytes(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class _Cgroup:
    """A cgroup v1 memory group capped at ``limit`` bytes (created by :meth:`create`)."""

    path: Path
    limit: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, limit: int) -> _Cgroup:
        """Raises ``OSError`` where the controller is missing or not writable."""
        errors = []
        for parent in dict.fromkeys((_own_cgroup(), CGROUP_ROOT)):
            path = parent / f"mobile-peft-emulate-{os.getpid()}-{time.monotonic_ns()}"
            try:
                path.mkdir()
            except OSError as exc:
                errors.append(f"{parent}: {exc.strerror or exc}")
                continue
            group = cls(path, limit)
            try:
                (path / "memory.limit_in_bytes").write_text(str(limit))
                if (path / "memory.memsw.limit_in_bytes").exists():
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
                else:
                    group.notes.append("no memory.memsw (swap accounting off): the child could swap instead of being killed")
            except OSError:
                group.remove()
                raise
            return group
        raise OSError("; ".join(errors) or f"{CGROUP_ROOT} does not exist")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def read(self, name: str) -> int | None:
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def oom_kills(self) -> int | None:
        try:
            for line in (self.path / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return None

    def remove(self) -> None:
        for _ in range(50):  # the group empties once the kernel has reaped the child
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def _hold_with_rlimit(pid: int, budget: int) -> int:
    """Cap the child's address space at its virtual size now + ``budget``; returns the cap."""
    cap = _status_bytes(pid, "VmSize") + budget
    _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
    resource.prlimit(pid, resource.RLIMIT_AS, (cap, hard if hard == resource.RLIM_INFINITY or hard > cap else cap))
    return cap


def _read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    """One line of the child's stdout, or None when it exits or ``timeout`` passes."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    line = proc.stdout.readline()
    return line.strip() if line else None


def emulate_bundle(
    bundle: str | Path | Bundle,
    device: str,
    steps: int = 5,
    budget_bytes: int | None = None,
    limiter: str = "auto",
) -> dict[str, Any]:
    """Train ``steps`` steps of ``bundle`` in a child held to ``device``'s app budget (or
    ``budget_bytes``) and big-core count; see the module docstring. Returns the report: ``fits``
    (the child survived every step), ``peak_growth_bytes`` (the peak it reached, killed or not),
    ``completed_steps``, how it was held and how it ended."""
    if limiter not in LIMITERS:
        raise ConfigError(f"limiter={limiter!r}; expected one of {list(LIMITERS)}.")
    if steps < 1:
        raise ConfigError(f"steps={steps}; expected at least 1.")
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    profile = get_device(device)
    budget = int(budget_bytes if budget_bytes is not None else profile.app_budget_bytes)
    if budget <= 0:
        raise ConfigError(f"budget_bytes={budget}; expected a positive number of bytes.")
    threads = max(1, min(profile.training_threads, len(os.sched_getaffinity(0))))
    group, notes, cgroup_error = None, [], None
    if limiter in ("auto", "cgroup-v1"):
        try:
            group = _Cgroup.create(budget)
            notes += group.notes
        except OSError as exc:
            cgroup_error = f"cgroup v1 memory controller not usable ({exc})"
            if limiter == "cgroup-v1":
                raise MobilePeftError(
                    f"--emulate cannot hold the child to a budget: {cgroup_error}. Run as root on a host with "
                    "cgroup v1 (/sys/fs/cgroup/memory), or use the rlimit-as limiter."
                ) from None
            notes.append(f"{cgroup_error}; fell back to RLIMIT_AS")
    try:
        with tempfile.TemporaryDirectory(prefix="mobile-peft-emulate-") as tmp:
            return _run(bundle, profile.name, budget, threads, steps, group, Path(tmp), notes, cgroup_error)
    finally:
        if group is not None:
            group.remove()


def _run(bundle: Bundle, device: str, budget: int, threads: int, steps: int, group: _Cgroup | None, tmp: Path,
         notes: list[str], cgroup_error: str | None) -> dict[str, Any]:
    out = tmp / "result.json"
    cmd = [sys.executable, "-m", "mobile_peft.runtime._profile_worker", str(bundle.path), "--steps", str(steps),
           "--threads", str(threads), "--out", str(out), "--hold"]
    env = {**os.environ, **{k: str(threads) for k in _THREAD_VARS}}
    stderr = (tmp / "stderr").open("w+")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    completed, peak_sampled, limit, how, uncached = 0, 0, None, None, 0
    try:
        if _read_line(proc, _READY_TIMEOUT_S) != "ready":
            proc.kill()
            proc.wait()
            stderr.seek(0)
            raise MobilePeftError(f"the emulation's child did not start (exit {proc.returncode}):\n{stderr.read()[-2000:]}")
        baseline_rss = _status_bytes(proc.pid, "VmRSS")
        if group is not None:
            group.add(proc.pid)
            how, limit = "cgroup-v1", budget
        else:
            try:
                limit = _hold_with_rlimit(proc.pid, budget)
            except OSError as exc:
                proc.kill()
                proc.wait()
                raise MobilePeftError(
                    f"--emulate cannot hold the child to a budget: {cgroup_error or 'cgroup v1 not tried'}, and "
                    f"setting RLIMIT_AS failed ({exc}). Run as root on Linux with cgroup v1, or measure with "
                    "`mobile-peft profile` (no --emulate) and compare its peak growth with the budget."
                ) from None
            how = "rlimit-as"
            notes.append("RLIMIT_AS counts virtual memory (reservations never touched, mapped files): stricter than the budget")
        uncached = _drop_from_page_cache(path for path in Path(bundle.path).rglob("*") if path.is_file())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        lines = []
        while proc.poll() is None:  # sample the peak (all a killed child leaves under RLIMIT_AS)
            lines.append(_read_line(proc, 0.05) or "")
            peak_sampled = max(peak_sampled, _status_bytes(proc.pid, "VmHWM") - baseline_rss)
        lines += proc.stdout.read().splitlines()  # what the last select did not see
        completed = max([int(ln.split()[1]) for ln in lines if ln.startswith("step ")], default=0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.seek(0)
        err = stderr.read()
        stderr.close()
    code = proc.returncode
    fits = code == 0 and completed == steps and out.is_file()
    measured = json.loads(out.read_text()) if fits else None
    report: dict[str, Any] = {
        "bundle": str(bundle.path), "format": bundle.format, "device": device, "budget_bytes": budget,
        "threads": threads, "steps": steps, "completed_steps": completed, "fits": fits, "limiter": how,
        "limit_bytes": limit, "exit_code": code,
        "killed_by": signal.Signals(-code).name if code < 0 else None,
    }
    if group is not None:
        report.update(cgroup_max_usage_bytes=group.read("memory.max_usage_in_bytes"),
                      cgroup_failcnt=group.read("memory.failcnt"), cgroup_oom_kills=group.oom_kills())
        peak = report["cgroup_max_usage_bytes"]
    else:
        peak = None
    if measured is not None:
        report["peak_rss_growth_bytes"] = measured["peak_rss_bytes"] - measured["baseline_rss_bytes"]
        report["step_seconds"] = measured["step_seconds"]
        report["losses"] = measured["losses"]
    report["peak_growth_bytes"] = peak if peak is not None else report.get("peak_rss_growth_bytes", peak_sampled)
    bound = bundle.manifest.memory_bound
    report["lower_bound_bytes"] = bound["total_bytes"] if bound else None
    report["ratio_to_bound"] = ratio_to_bound(report["peak_growth_bytes"], bound) if fits else None  # a killed run stopped early
    if not fits:
        where = f"after {completed} of {steps} steps" if completed else "while loading the bundle or in its first step"
        cause = f"killed by {report['killed_by']}" if report["killed_by"] else f"exit {code}"
        tail = [ln for ln in err.splitlines() if ln.strip()][-1:]
        report["failure"] = f"{cause} {where}" + (f" ({tail[0][:200]})" if tail and code > 0 else "")
    report["uncached_bytes"] = uncached
    report["notes"] = notes
    return report


def _drop_from_page_cache(paths: Iterable[Path]) -> int:
    """Drop the clean page-cache pages of the files ``paths`` (``POSIX_FADV_DONTNEED``); returns
    their total size. Why: the bundle's files were read before the child is held -- checksummed by
    :meth:`Bundle.open` in both processes -- and a cached page stays charged to the cgroup that
    read it in, so the child would map the ``.pte``'s frozen weights (most of the bundle's bytes)
    without paying for them: measured on ``smolvlm-256m`` cut to 2+4 layers (a 175 MiB ``.pte``),
    the group's peak was 572 MiB while the child's RSS grew 749 MiB. Dropped, the child's page
    faults read them in and charge them to its own group, as a phone's app pays for the model it
    maps; at the limit the kernel reclaims clean pages of the group before it kills."""
    total = 0
    for path in paths:
        with path.open("rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        total += path.stat().st_size
    return total
