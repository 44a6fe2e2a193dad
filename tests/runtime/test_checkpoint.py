"""Checkpoints are atomic: half-written ones are invisible, old ones are pruned."""

import numpy as np

from mobile_peft.runtime.checkpoint import CHECKPOINT_DIR, latest_checkpoint, load_checkpoint, save_checkpoint


def test_save_load_and_prune(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"param/x": np.full(3, step, np.float32)}, {"losses": [1.0]}, keep=2)
    names = sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir())
    assert names == ["ckpt-00000004", "ckpt-00000006"]
    tensors, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert meta["step"] == 6 and tensors["param/x"].tolist() == [6, 6, 6]


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 3, {"param/x": np.zeros(2, np.float32)}, {})
    partial = tmp_path / CHECKPOINT_DIR / ".tmp-00000006-999"
    partial.mkdir()
    (partial / "state.safetensors").write_bytes(b"\x00garbage")
    assert latest_checkpoint(tmp_path).name == "ckpt-00000003"
    save_checkpoint(tmp_path, 6, {"param/x": np.ones(2, np.float32)}, {})
    assert not partial.exists() and latest_checkpoint(tmp_path).name == "ckpt-00000006"
