"""``mobile-peft train`` / ``eval`` and ``runtime_demo`` end to end on the tiny pte bundle."""

import json
import re

import pytest

from mobile_peft.cli import main


def test_train_then_eval_with_the_personal_adapter(pte_bundle, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(pte_bundle), "--data", "digits:parity", "--steps", "8", "--checkpoint-every", "4",
                 "--out", str(run), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["steps"] == 8 and len(trained["losses"]) == 8 and (run / "adapter_config.json").is_file()
    assert main(["train", str(pte_bundle), "--data", "digits:parity", "--steps", "10", "--checkpoint-every", "4",
                 "--out", str(run), "--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["resumed_from"] == 8 and len(resumed["losses"]) == 10
    assert main(["eval", str(pte_bundle), "--adapter", str(run), "--data", "digits:parity", "--limit", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 8 and 0.0 <= report["accuracy"] <= 1.0


def test_train_reports_a_bad_bundle_cleanly(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["train", str(tmp_path), "--steps", "1", "--out", str(tmp_path / "run")]) == 2
    assert "missing key" in capsys.readouterr().err


def test_runtime_demo_returns_training_and_profile_tables(pte_bundle, tmp_path):
    from mobile_peft.runtime import runtime_demo

    summary = runtime_demo(pte_bundle, tmp_path / "demo", steps=6, devices=("galaxy-a14",), eval_limit=8)
    assert summary["train"]["steps"] == 6 and summary["eval_loss_after"] < summary["eval_loss_before"]
    (row,) = summary["profile_table"]
    assert row["device"] == "galaxy-a14" and row["fits"] and row["peak_growth_bytes"] > 0


def test_a_bundle_without_adapter_scales_is_refused_naming_the_key(pte_bundle, tmp_path):
    """Schema 2 bundles record every slot's scale (the personal adapter needs it): a manifest
    without it is refused before anything is loaded, naming each place."""
    import shutil

    from mobile_peft.core.errors import BundleError
    from mobile_peft.runtime import train_bundle
    from mobile_peft.runtime.trainer import TrainOptions

    bundle = shutil.copytree(pte_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for info in manifest["rank_schedule"]["modules"].values():
        for slot in info["slots"].values():
            slot.pop("scale", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        train_bundle(bundle, tmp_path / "run", TrainOptions(steps=4, data="digits:parity", checkpoint_every=2))
    assert len(info.value.problems) == len(manifest["rank_schedule"]["modules"])
    assert all(p.startswith("missing key rank_schedule.modules[") and p.endswith(".scale") for p in info.value.problems)


def test_train_refuses_a_device_whose_budget_the_plan_exceeds(pte_bundle, tmp_path, capsys, monkeypatch):
    import dataclasses

    from mobile_peft.runtime import devices, profile
    from mobile_peft.runtime.bundle import Bundle

    real = devices.get_device
    planned = profile.memory_estimate(Bundle.open(pte_bundle))["planned_bytes"]

    def small(name):  # a phone with room for about 70 % of the plan
        return dataclasses.replace(real("galaxy-a14"), app_budget_bytes=int(0.7 * planned)) if name == "tiny-phone" else real(name)

    monkeypatch.setattr(devices, "get_device", small)
    monkeypatch.setattr(profile, "get_device", small)
    code = main(["train", str(pte_bundle), "--data", "digits:parity", "--steps", "2", "--out", str(tmp_path / "r"), "--device", "tiny-phone"])
    err = capsys.readouterr().err
    assert code == 2 and "the bundle plans" in err and "(batch 4)" in err
    assert re.search(r"re-export with --batch-size [123] ", err), err
    assert not (tmp_path / "r" / "checkpoints").exists()
