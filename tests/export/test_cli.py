"""`mobile-peft export` / `inspect` end to end on a model directory (ONNX: the fastest exporter)."""

from __future__ import annotations

import json

import pytest

from mobile_peft.cli import main

pytest.importorskip("onnxruntime.training")


def test_export_then_inspect(tmp_path, capsys):
    model_dir, bundle = tmp_path / "model", tmp_path / "bundle"
    assert main(["build", "--preset", "tiny", "--quant", "int8", "--out", str(model_dir), "--json"]) == 0
    capsys.readouterr()
    args = [
        "export",
        str(model_dir),
        "--format",
        "onnx",
        "--adapter",
        "hydra",
        "--rank",
        "2",
        "--batch-size",
        "1",
        "--zip",
        "--out",
        str(bundle),
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["zip"] and summary["total_bytes"] > 0
    assert main(["inspect", summary["zip"], "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["rank_schedule"]["adapter"] == "hydra" and inspected["input_spec"]["batch_size"] == 1
    # exporting into a non-empty directory is refused with a message naming it
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err


def test_missing_onnxruntime_training_names_the_extra(monkeypatch, tmp_path):
    import sys

    from mobile_peft.core.errors import MissingExtraError
    from mobile_peft.export import export_bundle
    from mobile_peft.models import build_model

    monkeypatch.setitem(sys.modules, "onnxruntime.training", None)  # as on Python >= 3.12
    with pytest.raises(MissingExtraError, match=r"mobile-peft\[onnx\]"):
        export_bundle(build_model("tiny"), "onnx", tmp_path / "b", rank=2, batch_size=1)


def test_same_seed_same_bundle_bytes(tmp_path, capsys):
    """Default adapters are initialised from --seed: the same command writes the same files."""
    model_dir = tmp_path / "model"
    assert main(["build", "--preset", "tiny", "--quant", "int8", "--out", str(model_dir), "--json"]) == 0

    def export(name: str, seed: int) -> dict[str, str]:
        out = tmp_path / name
        args = ["export", str(model_dir), "--format", "onnx", "--rank", "2", "--batch-size", "1"]
        assert main([*args, "--seed", str(seed), "--out", str(out), "--json"]) == 0
        capsys.readouterr()
        return {f["path"]: f["sha256"] for f in json.loads((out / "manifest.json").read_text())["files"]}

    first, again, other = export("a", 0), export("b", 0), export("c", 1)
    # onnxblock numbers the optimizer's node names with a per-process counter, so a second export
    # in the same process renames them (onnx::AdamWOptimizer::2 -> ::4); everything else is equal.
    first.pop("optimizer_model.onnx"), again.pop("optimizer_model.onnx")
    assert first == again
    assert first["checkpoint"] != other["checkpoint"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {"xnnpack": True, "recompute_activations": False}),
        (["--recompute-activations"], {"xnnpack": True, "recompute_activations": True}),
        (["--no-xnnpack", "--recompute-activations"], {"xnnpack": False, "recompute_activations": True}),
    ],
)
def test_pte_switches_reach_the_export_options(monkeypatch, tmp_path, flags, expected):
    """`--no-xnnpack` / `--recompute-activations` become the PteOptions the pte export runs with."""
    import mobile_peft.export as export

    seen = {}

    def fake_export_bundle(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(export, "export_bundle", fake_export_bundle)
    assert main(["export", str(tmp_path), "--format", "pte", "--out", str(tmp_path / "b"), *flags]) != 0
    options = seen["pte_options"]
    assert {name: getattr(options, name) for name in expected} == expected
