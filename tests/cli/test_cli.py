"""The ``mobile-peft`` command: build, finetune, demo (smoke sizes), and clean errors."""

import json

import numpy as np
import pytest
from PIL import Image

from mobile_peft.adapters import load_adapter
from mobile_peft.cli import main
from mobile_peft.models import load_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    assert main(["build", "--preset", "tiny", "--out", str(out), "--json"]) == 0
    return out


def _json_out(capsys):
    return json.loads(capsys.readouterr().out)


def test_build_writes_a_loadable_model(model_dir, capsys):
    model, tokenizer = load_model(model_dir)
    assert model.config.name == "tiny" and tokenizer.token_to_id("<image>") == 4


def test_build_quantised(tmp_path, capsys):
    assert main(["build", "--preset", "tiny", "--quant", "int4", "--out", str(tmp_path), "--json"]) == 0
    summary = _json_out(capsys)
    assert summary["quant"] == "int4" and summary["linear_weight_bytes"] > 0


def test_finetune_on_digits_saves_a_loadable_adapter(model_dir, tmp_path, capsys):
    out = tmp_path / "adapter"
    code = main(
        ["finetune", str(model_dir), "--data", "digits:parity", "--steps", "3", "--batch-size", "8", "--quant", "int8",
         "--eval-limit", "16", "--out", str(out), "--json"]
    )
    assert code == 0
    report = _json_out(capsys)
    assert report["steps"] == 3 and report["trainable_params"] > 0 and report["eval_examples"] == 16
    assert (out / "adapter_config.json").exists() and (out / "loss_curve.png").exists()
    model, _ = load_model(model_dir, quant="int8")
    assert load_adapter(model, out)


def test_finetune_on_a_user_folder(model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.fromarray((np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8)).save(data / "images" / f"{i}.png")
        rows.append(json.dumps({"image": f"{i}.png", "question": "is this digit even or odd ?", "answer": ["even", "odd"][i % 2]}))
    (data / "annotations.jsonl").write_text("\n".join(rows) + "\n")
    code = main(["finetune", str(model_dir), "--data", str(data), "--steps", "2", "--batch-size", "2", "--adapter", "hydra",
                 "--rank", "2", "--out", str(tmp_path / "a"), "--json"])
    assert code == 0 and _json_out(capsys)["adapter"] == "hydra"


def test_bad_rows_exit_non_zero_with_the_line(model_dir, tmp_path, capsys):
    data = tmp_path / "bad"
    (data / "images").mkdir(parents=True)
    (data / "annotations.jsonl").write_text('{"image": "missing.png", "question": "q", "answer": "a"}\nnot json\n')
    assert main(["finetune", str(model_dir), "--data", str(data), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "line 2" in err


def test_bad_model_dir_exits_non_zero(tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "nope"), "--steps", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_full_finetune_needs_float(model_dir, tmp_path, capsys):
    assert main(["finetune", str(model_dir), "--full", "--quant", "int8", "--steps", "1", "--out", str(tmp_path / "f")]) == 2
    assert "float backbone" in capsys.readouterr().err


def test_demo_smoke(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--pretrain-steps", "3", "--steps", "2", "--skip-export", "--json"])
    assert code == 0
    summary = _json_out(capsys)
    assert {"accuracy_before", "accuracy_after", "trainable_params", "backbone_total_bytes", "quantisation_quality"} <= set(summary)
    assert [r["quant"] for r in summary["quantisation_quality"]] == ["none", "int8", "int4"]
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_full_demo_exports_trains_on_device_and_profiles(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--pretrain-steps", "20", "--steps", "5", "--device-steps", "4", "--json"])
    assert code == 0
    summary = _json_out(capsys)
    assert {"pte", "onnx"} <= set(summary["bundles"])
    runtime = summary["runtime"]
    assert len(runtime["losses"]) == 4 and {r["device"] for r in runtime["profile_table"]} >= {"host", "galaxy-a14"}
