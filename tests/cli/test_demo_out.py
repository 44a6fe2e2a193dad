"""``mobile-peft demo`` re-run over its own output replaces it; it never clears a directory it did not write."""

import pytest

from mobile_peft.cli.demo import _clear_previous_demo
from mobile_peft.core.errors import ConfigError


def test_an_earlier_demo_output_is_replaced_and_other_files_are_kept(tmp_path):
    (tmp_path / "bundles" / "bundle_pte").mkdir(parents=True)
    (tmp_path / "bundles" / "bundle_pte" / "model.pte").write_bytes(b"old")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "loss_curve.png").write_bytes(b"png")
    (tmp_path / "notes.txt").write_text("mine")
    _clear_previous_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_directory_the_demo_did_not_write_is_refused(tmp_path):
    (tmp_path / "bundles").mkdir()
    with pytest.raises(ConfigError, match="not an earlier demo's output"):
        _clear_previous_demo(tmp_path)
    assert (tmp_path / "bundles").is_dir()


def test_a_missing_or_empty_directory_is_fine_and_a_file_is_refused(tmp_path):
    _clear_previous_demo(tmp_path / "absent")
    _clear_previous_demo(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        _clear_previous_demo(tmp_path / "f")
