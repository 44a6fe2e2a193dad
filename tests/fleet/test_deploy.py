"""`fleet serve` (a SuperLink running the fleet's ServerApp) and two `fleet join` processes (SuperNodes
running its ClientApp) on loopback: two rounds, both phones' updates aggregated, the global adapter
written, both phones leave when the server is done, no Flower log line on the terminal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from mobile_peft.runtime.adapter import read_adapter
from mobile_peft.runtime.bundle import Bundle

# The installed console script: stdout/stderr exactly as a user sees them.
CLI = [str(Path(sys.executable).with_name("mobile-peft"))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_and_two_joins_on_loopback(fleet_bundle, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    cli = [*CLI, "fleet"]
    server = subprocess.Popen(
        [*cli, "serve", str(fleet_bundle), "--address", address, "--clients", "2", "--rounds", "2", "--local-steps", "2",
         "--out", str(tmp_path / "global"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(3)
    phones = [
        subprocess.Popen([*cli, "join", str(fleet_bundle), "--data", f"fleet:{i}", "--tiers", "1,2,3", "--server", address],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    try:
        out, err = server.communicate(timeout=300)
        phone_out = [p.communicate(timeout=60) for p in phones]
    finally:
        for p in (server, *phones):
            if p.poll() is None:
                p.kill()
    assert server.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["complete"] and summary["registered"] == 2
    assert json.loads((tmp_path / "global" / "rounds.json").read_text())["rounds"] == summary["rounds"]
    assert [r["accepted"] for r in summary["rounds"]] == [2, 2]
    assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in summary["rounds"])
    params, masks = read_adapter(Bundle.open(fleet_bundle), tmp_path / "global")
    assert any(v.any() for k, v in params.items() if k.endswith("lora_B"))  # the phones' training reached it
    for p, (_, e) in zip(phones, phone_out):
        assert p.returncode == 0, e[-2000:]
    for text in (err, *(e for _, e in phone_out)):
        assert "flwr" not in text.lower() and "INFO" not in text, text[-2000:]
