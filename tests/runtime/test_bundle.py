"""Reading bundles: checksums are verified, zips open, the schedule becomes masks in input order."""

import json
import shutil
import zipfile

import numpy as np
import pytest

from mobile_peft.core.errors import MobilePeftError
from mobile_peft.runtime.bundle import Bundle


def test_tampered_file_is_refused_with_every_problem(pte_bundle, tmp_path):
    copy = shutil.copytree(pte_bundle, tmp_path / "b")
    data = bytearray((copy / "adapters.ptd").read_bytes())
    data[-1] ^= 0xFF
    (copy / "adapters.ptd").write_bytes(bytes(data))
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(MobilePeftError) as info:
        Bundle.open(copy)
    assert "adapters.ptd" in str(info.value) and "tokenizer.json" in str(info.value)


def test_zip_bundle_opens(pte_bundle, tmp_path):
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in pte_bundle.iterdir():
            z.write(path, path.name)
    bundle = Bundle.open(archive)
    assert bundle.format == "pte" and bundle.file("model.pte").is_file()


def test_schedule_masks_follow_the_graph_input_order(pte_bundle):
    bundle = Bundle.open(pte_bundle)
    manifest = json.loads((pte_bundle / "manifest.json").read_text())
    schedule = bundle.schedule
    assert [f"{e.module}.{e.slot}_rank_mask" for e in schedule.mask_inputs] == [e["input"] for e in manifest["rank_schedule"]["mask_inputs"]]
    later = schedule.phase_masks(schedule.phase_index(100))
    for module, mask in zip([e.module for e in schedule.mask_inputs], later):
        expected = [1, 1, 0, 0] if module.endswith("v_proj") else [1, 1, 1, 1]
        np.testing.assert_array_equal(mask, expected)
    assert schedule.phase_index(0) == 0 and schedule.params(schedule.ranks(0)) == schedule.budget_params


def test_trainable_roles_come_from_the_adapter_protocol(pte_bundle):
    """Each slot has one down [r_max, fan_in] and one up [out, r_max] tensor, as recorded."""
    bundle = Bundle.open(pte_bundle)
    pairs = bundle.manifest.slot_pairs()
    assert len(pairs) == len(bundle.schedule.mask_inputs)
    for (module, slot), pair in pairs.items():
        r_max = bundle.schedule.modules[module][slot]["r_max"]
        assert pair["down"].shape[0] == r_max and pair["up"].shape[1] == r_max
        assert (pair["down"].param, pair["up"].param) == ("lora_A", "lora_B")


def test_every_manifest_problem_is_reported_at_once_with_its_path(pte_bundle, tmp_path):
    from mobile_peft.core.errors import BundleError

    copy = shutil.copytree(pte_bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    del manifest["trainable"][0]["role"]
    del manifest["input_spec"]["token_ids"]["eos"]
    del manifest["methods"]["train"]["fqn_method"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        Bundle.open(copy)
    problems = info.value.problems
    assert any("schema_version is 99" in p and "[2]" in p for p in problems)
    assert "missing key trainable[0].role" in problems
    assert "missing key input_spec.token_ids.eos" in problems
    assert "missing key methods.train.fqn_method" in problems


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_artifact_tensors_that_disagree_with_the_manifest_are_refused_before_training(fmt, request, tmp_path):
    from mobile_peft.core.errors import BundleError
    from mobile_peft.runtime.trainer import TrainOptions, train_bundle

    copy = shutil.copytree(request.getfixturevalue(f"{fmt}_bundle"), tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    down = next(t for t in manifest["trainable"] if t["role"] == "down")
    down["shape"][1] += 1  # fan_in no longer the artifact's (the rank dimension stays r_max)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"{down['name']}: the artifact has \(\d+, \d+\) float32, the manifest"):
        train_bundle(copy, tmp_path / "run", TrainOptions(steps=2, data="digits:parity", checkpoint_every=1))
    assert not (tmp_path / "run" / "checkpoints").exists() or not list((tmp_path / "run" / "checkpoints").glob("ckpt-*"))


def test_a_listed_file_outside_the_bundle_is_refused_without_being_read(pte_bundle, tmp_path):
    from mobile_peft.core.errors import BundleError

    copy = shutil.copytree(pte_bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].append({"path": "../../etc/passwd", "sha256": "0" * 64, "size": 1})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        Bundle.open(copy)
    assert any("files[" in p and "relative path inside the bundle" in p for p in info.value.problems)
    assert not any("fails its sha256" in p or "bytes; the manifest says" in p for p in info.value.problems)
