"""Manifest validation and `mobile-peft inspect`: tampered file, missing key, unknown schema version."""

from __future__ import annotations

import json
import shutil

import pytest

from mobile_peft.cli import main
from mobile_peft.core import contract
from mobile_peft.core.errors import BundleError
from mobile_peft.core.manifest import validate_bundle
from mobile_peft.core.summary import summarize_bundle
from mobile_peft.export import zip_bundle


@pytest.fixture
def bundle(onnx_bundle, tmp_path):
    """A private copy of a real bundle (the ONNX one: the fastest to export)."""
    return shutil.copytree(onnx_bundle.path, tmp_path / "bundle")


def _edit_manifest(bundle, edit):
    path = bundle / contract.MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_manifest_has_every_contract_key(onnx_bundle):
    manifest = validate_bundle(onnx_bundle.path)
    assert all(key in manifest.raw for key in contract.REQUIRED_KEYS)
    assert manifest.raw[contract.Key.SCHEMA_VERSION] == contract.SCHEMA_VERSION
    assert manifest.input_spec.batch_size == 2 and manifest.input_spec.token_ids.pad == 0
    schedule = manifest.rank_schedule
    inputs = [i["name"] for i in manifest.methods[contract.MethodKey.TRAIN_INPUTS]]
    assert inputs == [contract.INPUT_PIXEL_VALUES, contract.INPUT_IDS, contract.INPUT_LABELS, *(e.input for e in schedule.mask_inputs)]
    assert set(schedule.modules) == {e.module for e in schedule.mask_inputs}
    assert {t.role for t in manifest.trainable} == set(contract.ROLES)
    listed = {f["path"] for f in manifest.files}
    assert contract.ONNX_CHECKPOINT_FILE in listed and contract.TOKENIZER_FILE in listed


def test_inspect_prints_a_valid_bundle(onnx_bundle, capsys):
    assert main(["inspect", str(onnx_bundle.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "onnx" and out["trainable_parameters"] > 0
    assert all(f["verified"] for f in out["files"])
    assert main(["inspect", str(onnx_bundle.path)]) == 0
    assert "rank schedule" in capsys.readouterr().out


def test_inspect_reads_a_zip(onnx_bundle, tmp_path):
    archive = zip_bundle(onnx_bundle.path, tmp_path / "b.zip")
    assert summarize_bundle(archive)["format"] == "onnx"


def test_tampered_file_is_rejected(bundle, capsys):
    target = bundle / contract.ONNX_EVAL_FILE
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="eval_model.onnx.*sha256"):
        validate_bundle(bundle)
    assert main(["inspect", str(bundle)]) == 2
    assert "sha256" in capsys.readouterr().err


def test_missing_key_is_rejected(bundle, capsys):
    _edit_manifest(bundle, lambda d: (d.pop(contract.Key.RANK_SCHEDULE), d[contract.Key.INPUT_SPEC].pop("batch_size")))
    with pytest.raises(BundleError) as info:
        validate_bundle(bundle)
    message = str(info.value)
    assert "missing key 'rank_schedule'" in message and "input_spec.batch_size" in message  # all problems at once
    assert main(["inspect", str(bundle)]) == 2
    assert "rank_schedule" in capsys.readouterr().err


def test_unknown_schema_version_is_rejected(bundle, capsys):
    _edit_manifest(bundle, lambda d: d.update({contract.Key.SCHEMA_VERSION: 99}))
    with pytest.raises(BundleError, match=r"schema_version is 99; this mobile-peft reads \[2\]"):
        validate_bundle(bundle)
    assert main(["inspect", str(bundle)]) == 2
    assert "schema_version" in capsys.readouterr().err


def test_missing_file_and_not_a_bundle(bundle, tmp_path):
    (bundle / contract.TOKENIZER_FILE).unlink()
    with pytest.raises(BundleError, match="tokenizer.json.*missing"):
        validate_bundle(bundle)
    with pytest.raises(BundleError, match="manifest.json"):
        validate_bundle(tmp_path)
