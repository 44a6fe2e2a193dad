"""Reading bundles: checksums are verified, zips open, the schedule becomes masks in input order."""

import json
import shutil
import zipfile

import numpy as np
import pytest

from mobile_peft.errors import MobilePeftError
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
    assert [f"{m}.{s}_rank_mask" for m, s in schedule.mask_order] == [e["input"] for e in manifest["rank_schedule"]["masks"]]
    later = schedule.phase_masks(schedule.phase_index(100))
    for (module, _), mask in zip(schedule.mask_order, later):
        expected = [1, 1, 0, 0] if module.endswith("v_proj") else [1, 1, 1, 1]
        np.testing.assert_array_equal(mask, expected)
    assert schedule.phase_index(0) == 0 and schedule.params(schedule.ranks(0)) == schedule.budget_params
