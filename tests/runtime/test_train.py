"""On-device training of a tiny bundle (both formats): loss falls, the schedule's phases change the
active rank, the personal adapter loads back into the authoring model with the same eval result,
and a run killed with SIGKILL at any moment resumes to the very same tensors."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from mobile_peft.runtime.bundle import Bundle
from mobile_peft.runtime.checkpoint import CHECKPOINT_DIR, latest_checkpoint, load_checkpoint
from mobile_peft.runtime.evaluate import evaluate_bundle
from mobile_peft.runtime.trainer import TrainOptions, train_bundle

from .conftest import PHASE_STEP, tiny_model

TASK = "digits:next-digit"


@pytest.fixture(params=["pte", "onnx"])
def bundle(request):
    return request.getfixturevalue(f"{request.param}_bundle")


def test_thirty_steps_lower_the_loss_and_phases_change_the_rank(bundle, tmp_path):
    report = train_bundle(bundle, tmp_path / "run", TrainOptions(steps=30, data=TASK, checkpoint_every=10))
    assert len(report.losses) == 30
    assert np.mean(report.losses[-5:]) < np.mean(report.losses[:5]) - 0.3
    (phase,) = [e for e in report.events if e["kind"] == "phase"]
    assert phase["step"] == PHASE_STEP and phase["params"] < Bundle.open(bundle).schedule.budget_params
    assert all(m.endswith("v_proj::lora") and change == [4, 2] for m, change in phase["changed"].items())
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] in (2, 4) and len(config["rank_pattern"]) == 4
    tensors = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    v_a = [v for k, v in tensors.items() if k.endswith("v_proj.lora_A.weight")]
    assert v_a and all(t.shape[0] == 2 for t in v_a)  # the active rank after the phase change


def test_personal_adapter_loads_into_the_authoring_model_with_the_same_eval(bundle, tmp_path):
    import torch

    from mobile_peft.adapters import load_adapter, remove_adapters
    from mobile_peft.data import VQADataset, load_digits_task
    from mobile_peft.train import evaluate

    run = tmp_path / "run"
    train_bundle(bundle, run, TrainOptions(steps=12, data=TASK, checkpoint_every=6, optimizer="adamw", lr=1e-2))
    # (pte: the numpy AdamW; onnx: the AdamW inside the artifact)
    ours = evaluate_bundle(bundle, TASK, adapter=run, limit=32)
    model, tokenizer = tiny_model()
    remove_adapters(model)
    load_adapter(model, run)
    with torch.no_grad():
        theirs = evaluate(model, VQADataset(load_digits_task("next-digit", "eval", limit=32), tokenizer, model.config.input_spec))
    assert ours.examples == theirs.examples == 32
    assert ours.accuracy == theirs.accuracy
    assert ours.loss == pytest.approx(theirs.loss, abs=1e-3)
    untrained = evaluate_bundle(bundle, TASK, limit=32)
    assert ours.loss < untrained.loss
    _same_file_as_save_adapter(model, run, tmp_path / "resaved")
    _peft_reads_it(model, run)


def _same_file_as_save_adapter(model, run, out):
    """The runtime's file is byte-for-byte what the authoring layer's save_adapter writes for the
    same weights (same config JSON, same tensors)."""
    from safetensors import safe_open

    from mobile_peft.adapters import save_adapter

    save_adapter(model, out, root="language_model")
    ours, theirs = (json.loads((d / "adapter_config.json").read_text()) for d in (run, out))
    assert ours == theirs
    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (run, out))
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    meta = [json.loads(safe_open(str(d / "adapter_model.safetensors"), "np").metadata()["mobile_peft"]) for d in (run, out)]
    assert meta[0]["root"] == meta[1]["root"] == "language_model" and meta[0]["method"] == "lora"


def _peft_reads_it(model, run):
    """Hugging Face PEFT loads the file into the language model (PEFT cannot wrap the int8
    QuantLinear, so both sides use the float tiny base with the same seed) with the same logits
    as the authoring layer's loader."""
    import torch

    peft = pytest.importorskip("peft")
    from mobile_peft.adapters import load_adapter
    from mobile_peft.models import build_model

    ids = torch.tensor([[1, 5, 9, 12, 7, 3, 11, 6]])
    ours, _ = build_model("tiny", seed=0)
    load_adapter(ours, run)
    base, _ = build_model("tiny", seed=0)
    peft_model = peft.PeftModel.from_pretrained(base.language_model, str(run)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ours.language_model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def _train_cmd(bundle, out, steps, every, resume=False):
    cmd = [sys.executable, "-c", "import sys; from mobile_peft.cli import main; sys.exit(main(sys.argv[1:]))", "train",
           str(bundle), "--data", TASK, "--steps", str(steps), "--checkpoint-every", str(every), "--out", str(out), "--json"]
    return cmd + (["--resume"] if resume else [])


def _final(run):
    return load_checkpoint(latest_checkpoint(run))


def _kill_when(bundle, out, steps, every, ready, extra_delay=0.0):
    """Start `mobile-peft train` and SIGKILL it once ``ready()`` (plus ``extra_delay``); True if it
    was still running when killed."""
    proc = subprocess.Popen(_train_cmd(bundle, out, steps, every), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(extra_delay)
        alive = proc.poll() is None
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), f"the training process failed (exit {proc.returncode})"
    return alive


def test_sigkill_at_any_moment_then_resume_gives_the_same_tensors(bundle, tmp_path):
    steps, every = 24, 3
    reference = train_bundle(bundle, tmp_path / "reference", TrainOptions(steps=steps, data=TASK, checkpoint_every=every))
    ref_tensors, ref_meta = _final(tmp_path / "reference")

    def ckpts(run):
        return sorted((run / CHECKPOINT_DIR).glob("ckpt-*")) if (run / CHECKPOINT_DIR).is_dir() else []

    scenarios = {
        "after-1st-checkpoint": (lambda run: len(ckpts(run)) >= 1, 0.0),
        "after-2nd-checkpoint": (lambda run: any(p.name >= "ckpt-00000006" for p in ckpts(run)), 0.0),
        "random-delay": (lambda run: len(ckpts(run)) >= 1, random.Random(0).uniform(0.0, 0.3)),
    }
    killed_mid_run = 0
    for name, (ready, delay) in scenarios.items():
        run = tmp_path / name
        killed_mid_run += _kill_when(bundle, run, steps, every, lambda r=run, f=ready: f(r), delay)
        last = latest_checkpoint(run)
        assert last is not None, name
        load_checkpoint(last)  # never a corrupt checkpoint
        resumed = train_bundle(bundle, run, TrainOptions(steps=steps, data=TASK, checkpoint_every=every), resume=True)
        tensors, meta = _final(run)
        assert meta["losses"] == pytest.approx(ref_meta["losses"], abs=1e-6), name
        assert set(tensors) == set(ref_tensors)
        for key, value in ref_tensors.items():
            np.testing.assert_allclose(tensors[key], value, atol=1e-6, err_msg=f"{name}: {key}")
        assert resumed.losses == pytest.approx(reference.losses, abs=1e-6)
        final_adapter = load_file(str(run / "adapter_model.safetensors"))
        for key, value in load_file(str(tmp_path / "reference" / "adapter_model.safetensors")).items():
            np.testing.assert_allclose(final_adapter[key], value, atol=1e-6)
    assert killed_mid_run >= 2  # the kills really interrupted running trainings


def test_resume_refuses_a_different_data_set(bundle, tmp_path):
    from mobile_peft.core.errors import ConfigError

    train_bundle(bundle, tmp_path, TrainOptions(steps=3, data=TASK, checkpoint_every=3))
    with pytest.raises(ConfigError, match="--data"):
        train_bundle(bundle, tmp_path, TrainOptions(steps=6, data="digits:parity", checkpoint_every=3), resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        train_bundle(bundle, tmp_path, TrainOptions(steps=6, data=TASK, checkpoint_every=3))
