"""Faults during on-device training: non-finite steps are not applied, a full or read-only disk
keeps the previous checkpoint, and SIGKILL at random moments loses nothing (a small campaign; the
full one is `make reliability`)."""

import errno

import numpy as np
import pytest

from mobile_peft.core.errors import CheckpointError, DivergedError
from mobile_peft.runtime import checkpoint as ckpt
from mobile_peft.runtime.checkpoint import latest_checkpoint, load_checkpoint
from mobile_peft.runtime.trainer import TrainOptions, train_bundle

TASK = "digits:next-digit"


@pytest.fixture(params=["pte", "onnx"])
def bundle(request):
    return request.getfixturevalue(f"{request.param}_bundle")


def _poison(monkeypatch, bad_steps):
    """Make the engine's loss NaN on the given (1-based) steps, as a diverging run would."""
    from mobile_peft.runtime import ort
    from mobile_peft.runtime.engine import PteEngine

    calls = {"n": 0}
    for cls in (PteEngine, ort.OrtEngine):
        real = cls.forward_backward

        def fake(self, inputs, _real=real):
            loss = _real(self, inputs)
            calls["n"] += 1
            return float("nan") if calls["n"] in bad_steps else loss

        monkeypatch.setattr(cls, "forward_backward", fake)


def test_a_non_finite_step_is_logged_and_not_applied(bundle, tmp_path, monkeypatch):
    reference = train_bundle(bundle, tmp_path / "ref", TrainOptions(steps=3, data=TASK, checkpoint_every=1))
    ref_after_2 = load_checkpoint(tmp_path / "ref" / "checkpoints" / "ckpt-00000002")[0]
    _poison(monkeypatch, {3})
    report = train_bundle(bundle, tmp_path / "run", TrainOptions(steps=3, data=TASK, checkpoint_every=1))
    assert [e["step"] for e in report.events if e["kind"] == "bad_step"] == [2]  # logged at 2 steps done
    assert report.as_dict()["bad_steps"] == 1 and np.isnan(report.losses[2]) and report.losses[:2] == reference.losses[:2]
    after_3 = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-00000003")[0]
    for key, value in ref_after_2.items():  # step 3 changed nothing
        if key.startswith("param/"):
            np.testing.assert_array_equal(after_3[key], value)


def test_too_many_bad_steps_stop_the_run_with_the_last_good_checkpoint_intact(bundle, tmp_path, monkeypatch):
    _poison(monkeypatch, {3, 4})
    with pytest.raises(DivergedError, match="2 training steps had a non-finite loss") as info:
        train_bundle(bundle, tmp_path, TrainOptions(steps=6, data=TASK, checkpoint_every=1, max_bad_steps=1))
    last = latest_checkpoint(tmp_path)
    assert str(last) in str(info.value) and last.name == "ckpt-00000003"
    tensors, _ = load_checkpoint(last)
    assert all(np.isfinite(v).all() for v in tensors.values())


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_keeps_the_previous_checkpoint(pte_bundle, tmp_path, monkeypatch, err):
    train_bundle(pte_bundle, tmp_path, TrainOptions(steps=2, data=TASK, checkpoint_every=2))
    before = latest_checkpoint(tmp_path)
    saved = load_checkpoint(before)[0]
    real = ckpt._fsync_path

    def failing(path):
        if ".tmp-" in str(path):
            raise OSError(err, "simulated")
        real(path)

    monkeypatch.setattr(ckpt, "_fsync_path", failing)
    with pytest.raises(CheckpointError) as info:
        train_bundle(pte_bundle, tmp_path, TrainOptions(steps=4, data=TASK, checkpoint_every=2), resume=True)
    assert errno.errorcode[err] in str(info.value) and f"the previous checkpoint {before} is intact" in str(info.value)
    assert latest_checkpoint(tmp_path) == before and not list((tmp_path / "checkpoints").glob(".tmp-*"))
    for key, value in load_checkpoint(before)[0].items():
        np.testing.assert_array_equal(value, saved[key])


def test_sigkill_campaign_loses_nothing(bundle, tmp_path):
    from mobile_peft.bench.faults import kill_campaign

    figures = kill_campaign(bundle, tmp_path / "campaign", kills=2, steps=8)
    assert figures["kills"] >= 2 and figures["checkpoints_checked"] > 0
    assert figures["corrupt_checkpoints"] == 0 and figures["steps_lost"] == 0 and figures["adapters_differing"] == 0
