"""Fault injection: kill on-device training with SIGKILL at random moments, resume, and check that
nothing saved is ever lost or left unreadable, and that the final adapter equals an uninterrupted
run's.

Each run is ``mobile-peft train BUNDLE --resume --checkpoint-every 1`` in a child process (the
command a user runs), so kills land in imports, in training steps and inside checkpoint writes
(a checkpoint every step makes writes a large share of the run). After every kill:

* every ``ckpt-*`` directory must load (``corrupt`` counts those that do not);
* the newest checkpoint's step must not be older than before the kill (``steps_lost`` adds up
  what went missing);
* a leftover ``.tmp-`` directory means the kill hit a checkpoint write (``kills_in_writes``).

The run is resumed until it finishes by itself; its adapter is compared with the reference
(``adapters_differing``, tolerance 1e-6). Runs repeat until ``kills`` kills have interrupted a
running process.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.adapter_files import ADAPTER_WEIGHTS_NAME

__all__ = ["kill_campaign"]

_MAIN = "import sys; from mobile_peft.cli import main; sys.exit(main(sys.argv[1:]))"


def _train(bundle: Path, out: Path, steps: int, data: str) -> list[str]:
    return [sys.executable, "-c", _MAIN, "train", str(bundle), "--data", data, "--steps", str(steps),
            "--checkpoint-every", "1", "--out", str(out), "--resume", "--json"]


def _checkpoints(run: Path) -> list[Path]:
    root = run / "checkpoints"
    return sorted(root.glob("ckpt-*")) if root.is_dir() else []


def _step(path: Path | None) -> int:
    return int(path.name.split("-")[1]) if path is not None else 0


def _adapter(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / ADAPTER_WEIGHTS_NAME))


def kill_campaign(bundle: str | Path, work: str | Path, kills: int = 20, steps: int = 16, data: str = "digits:next-digit",
                  seed: int = 0, max_delay_s: float = 0.4) -> dict[str, Any]:
    """The figures of one campaign on ``bundle`` (see the module docstring)."""
    from ..runtime.checkpoint import latest_checkpoint, load_checkpoint

    bundle, work = Path(bundle), Path(work)
    rng = random.Random(seed)
    reference = work / "reference"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(_train(bundle, reference, steps, data), check=True, capture_output=True)
    ref = _adapter(reference)
    figures = {"kills": 0, "kills_in_writes": 0, "resumes": 0, "runs": 0, "corrupt_checkpoints": 0,
               "steps_lost": 0, "adapters_differing": 0, "checkpoints_checked": 0}
    while figures["kills"] < kills:
        run = work / f"run-{figures['runs']}"
        figures["runs"] += 1
        best = 0
        while True:
            at_launch = _step(latest_checkpoint(run))
            log = (work / "stderr.log").open("wb")
            proc = subprocess.Popen(_train(bundle, run, steps, data), stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.monotonic() + 120
            # wait until this process has made progress (a new checkpoint), then a random moment more
            while proc.poll() is None and _step(latest_checkpoint(run)) <= at_launch and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, max_delay_s))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                figures["kills"] += 1
                if any((run / "checkpoints").glob(".tmp-*")):
                    figures["kills_in_writes"] += 1
            else:
                proc.wait()
            log.close()
            if proc.returncode not in (0, -signal.SIGKILL):
                tail = (work / "stderr.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the training process failed (exit {proc.returncode}): {tail}")
            for ckpt in _checkpoints(run):
                figures["checkpoints_checked"] += 1
                try:
                    load_checkpoint(ckpt)
                except Exception as exc:  # noqa: BLE001 - counting, whatever the error
                    figures["corrupt_checkpoints"] += 1
                    figures.setdefault("corrupt_examples", []).append(f"{ckpt.name}: {exc}"[:300])
            latest = _step(latest_checkpoint(run))
            figures["steps_lost"] += max(best - latest, 0)
            best = max(best, latest)
            if proc.returncode == 0 and (run / ADAPTER_WEIGHTS_NAME).is_file():
                break
            figures["resumes"] += 1
        got = _adapter(run)
        same = set(got) == set(ref) and all(np.allclose(got[k], ref[k], atol=1e-6, rtol=0) for k in ref)
        figures["adapters_differing"] += 0 if same else 1
    figures["seconds"] = round(time.perf_counter() - start, 1)
    return figures
