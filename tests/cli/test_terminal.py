"""The CLI owns the terminal: --help loads no heavy library, native stderr noise is dropped (and
kept with -v), --json is pure JSON, accuracies are shown as percentages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mobile_peft.cli import main
from mobile_peft.cli._terminal import native_stderr_filtered
from mobile_peft.cli._ui import percent, table


def test_help_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "from mobile_peft.cli import make_parser\n"
        "for argv in (['--help'], ['export', '--help'], ['finetune', '--help'], ['train', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        make_parser().parse_args(argv)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'executorch', 'onnxruntime', 'coremltools', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_native_stderr_lines_are_dropped_and_the_rest_forwarded(capfd):
    with native_stderr_filtered():
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"2026-12-01 [I:onnxruntime:, graph.cc:1] Gradient pass\n")
        os.write(2, b"a real problem\n")
        for piece in (b"[", b"cpuinfo_utils.cpp", b":", b"87", b"] ", b"Failed to open midr file", b"\n"):
            sys.stderr.buffer.write(piece)  # how ExecuTorch's bindings write through Python's stderr
        print("ours", file=sys.stderr)
        sys.stderr.write("[a list] of ours\n")
    err = capfd.readouterr().err
    assert "cpuinfo" not in err and "onnxruntime" not in err
    assert "a real problem" in err and "ours" in err and "[a list] of ours" in err


def test_hydra_rank_finetune_json_is_pure_json(tiny, tmp_path, capsys):
    from mobile_peft.models import save_model

    model, tokenizer = tiny
    model_dir = save_model(model, tokenizer, tmp_path / "tiny")
    code = main(["finetune", str(model_dir), "--data", "digits:parity", "--steps", "6", "--batch-size", "8",
                 "--allocator", "hydra-rank", "--budget-params", "20000", "--r-max", "4", "--eval-limit", "16",
                 "--out", str(tmp_path / "a"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)  # raises if anything else reached stdout
    assert report["allocator"] == "hydra-rank"


def test_accuracies_are_percentages():
    assert percent(0.002778) == "0.3 %" and percent(1) == "100.0 %" and percent("n/a") == "n/a"
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(table("t", ["field", "value"], [("accuracy after", 0.925), ("steps", 150)]))
    console.print(table("q", ["backbone", "accuracy"], [("int8", 0.8778)]))
    text = console.export_text()
    assert "92.5 %" in text and "87.8 %" in text and "150" in text
