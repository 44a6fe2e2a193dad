"""``mobile-peft profile --emulator``: the same training steps on an Android emulator or device.

Steps (each a plain ``adb`` call through :class:`~.android.AdbDevice`, so tests replay them):

1. push the bundle (manifest + every file it lists) to ``/data/local/tmp/mobile_peft/bundle``;
2. push the runner: a native binary built from the Android demo's training loop (``--runner``;
   it is not built here). Its contract: ``runner --bundle DIR --steps N --out FILE`` trains ``N``
   steps and writes ``{"step_seconds": [...], "losses": [...]}`` as JSON to ``FILE``;
3. start it in the background (``nohup ... & echo $!``) and sample ``dumpsys meminfo <pid>``
   until it exits (PSS and, on Android 10+, RSS);
4. pull the runner's JSON and report peak PSS/RSS with it, against the device profile's budget.

It cannot run on a machine without adb and a device; ``tests/runtime/test_emulator.py`` drives it
against recorded ``dumpsys meminfo`` output.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from mobile_peft.core import contract
from mobile_peft.core.errors import ConfigError, MobilePeftError

from .android import REMOTE_DIR, AdbDevice, peak
from .bundle import Bundle
from .devices import get_device

__all__ = ["profile_on_emulator"]

RUNNER_NAME = "mobile_peft_runner"


def profile_on_emulator(
    bundle: str | Path | Bundle,
    steps: int = 5,
    serial: str | None = None,
    runner: str | Path | None = None,
    device: str = "host",
    adb: AdbDevice | None = None,
    interval_s: float = 0.5,
) -> dict[str, Any]:
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    if runner is None or not Path(runner).is_file():
        raise ConfigError(
            f"--emulator needs --runner PATH: the on-device training runner binary (built from android_demo's native "
            f"training loop for the emulator's ABI); got {runner!r}."
        )
    adb = adb or AdbDevice.connect(serial)
    remote_bundle = posixpath.join(REMOTE_DIR, "bundle")
    adb.shell(f"rm -rf {REMOTE_DIR} && mkdir -p {remote_bundle}")
    names = [contract.MANIFEST_FILE, *(entry[contract.FileKey.PATH] for entry in bundle.manifest.files)]
    for name in names:
        adb.push(bundle.file(name), posixpath.join(remote_bundle, name))
    remote_runner = posixpath.join(REMOTE_DIR, RUNNER_NAME)
    adb.push(Path(runner), remote_runner)
    remote_result = posixpath.join(REMOTE_DIR, "result.json")
    started = adb.shell(
        f"chmod 755 {remote_runner} && cd {REMOTE_DIR} && nohup ./{RUNNER_NAME} --bundle {remote_bundle} "
        f"--steps {steps} --out {remote_result} > runner.log 2>&1 & echo $!"
    ).strip()
    if not started.isdigit():
        raise MobilePeftError(f"could not start the runner on the device (adb said {started!r}).")
    samples = adb.sample_while_running(int(started), interval_s=interval_s)
    memory = peak(samples)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "result.json"
        adb.pull(remote_result, local)
        if not local.is_file():
            log = adb.shell(f"cat {REMOTE_DIR}/runner.log")
            raise MobilePeftError(f"the runner wrote no result; its log:\n{log[-2000:]}")
        result = json.loads(local.read_text())
    budget = get_device(device).app_budget_bytes if device != "host" else None
    step_s = sorted(result.get("step_seconds", [])) or [float("nan")]
    return {
        "bundle": str(bundle.path),
        "device": device,
        "pid": int(started),
        **memory,
        "step_seconds_median": step_s[len(step_s) // 2],
        "losses": result.get("losses", []),
        "pss_per_sample_bytes": [s.total_pss for s in samples],
        "app_budget_bytes": budget,
        "fits": (memory["peak_pss_bytes"] <= budget) if budget else None,
    }
