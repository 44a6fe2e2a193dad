"""--emulator: the adb conversation, replayed against recorded dumpsys output."""

import json
from pathlib import Path

import pytest

from mobile_peft.core.errors import ConfigError
from mobile_peft.runtime.android import AdbDevice
from mobile_peft.runtime.emulator import profile_on_emulator

FIXTURES = Path(__file__).parent / "fixtures"


def test_profile_on_emulator_pushes_runs_samples_and_pulls(pte_bundle, tmp_path):
    recorded = (FIXTURES / "meminfo_android14.txt").read_text()
    alive = iter(["alive\n", "alive\n", "alive\n", ""])
    calls = []

    def fake(args):
        calls.append(list(args))
        if args[-3] == "pull":
            Path(args[-1]).write_text(json.dumps({"step_seconds": [0.2, 0.1, 0.3], "losses": [3.0, 2.5, 2.0]}))
            return ""
        command = args[-1]
        if "echo $!" in command:
            return "21936\n"
        if command.startswith("ls /proc/"):
            return next(alive)
        if command.startswith("dumpsys meminfo"):
            return recorded
        return ""

    runner = tmp_path / "runner"
    runner.write_bytes(b"\x7fELF")
    report = profile_on_emulator(pte_bundle, steps=3, runner=runner, device="pixel-7", adb=AdbDevice("emulator-5554", run=fake), interval_s=0)
    pushed = [c[-1] for c in calls if c[3] == "push"]
    assert any(p.endswith("bundle/model.pte") for p in pushed) and any(p.endswith("bundle/manifest.json") for p in pushed)
    assert any(p.endswith("mobile_peft_runner") for p in pushed)
    assert report["samples"] == 3 and report["peak_pss_bytes"] == 212526 * 1024 and report["peak_rss_bytes"] == 268796 * 1024
    assert report["step_seconds_median"] == 0.2 and report["fits"] is True


def test_emulator_needs_a_runner(pte_bundle):
    with pytest.raises(ConfigError, match="--runner"):
        profile_on_emulator(pte_bundle, runner=None, adb=AdbDevice(run=lambda args: ""))
