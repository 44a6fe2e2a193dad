"""ONNX Runtime training bundle: 20 AdamW steps in ORT equal 20 eager torch.optim.AdamW steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mobile_peft.adapters import adapter_parameters, remove_adapters

from .conftest import assert_ort_adamw_matches_eager, parity_batches

pytest.importorskip("onnxruntime.training")

from mobile_peft.core import contract  # noqa: E402
from mobile_peft.export.onnx import OrtTrainer  # noqa: E402
from mobile_peft.export.wrappers import TrainingWrapper  # noqa: E402


def test_artifacts_load_in_ort_1_19(onnx_bundle):
    import onnx

    for name in (contract.ONNX_TRAINING_FILE, contract.ONNX_EVAL_FILE, contract.ONNX_OPTIMIZER_FILE):
        assert onnx.load(str(onnx_bundle.path / name)).ir_version <= contract.ONNX_IR_VERSION
    from onnxruntime.training.api import CheckpointState

    state = CheckpointState.load_checkpoint(str(onnx_bundle.path / contract.ONNX_CHECKPOINT_FILE))
    params = dict(state.parameters)
    qweights = [name for name in params if name.endswith(".qweight")]
    assert qweights and all(params[n].data.dtype == np.int8 and not params[n].requires_grad for n in qweights)
    trainable = {name for name, p in params.items() if p.requires_grad}
    assert trainable == {e["name"] for e in onnx_bundle.manifest["trainable"]}  # only the adapters


def test_adamw_parity_with_eager(onnx_bundle, lora_model):
    model, tokenizer = lora_model
    opt = onnx_bundle.manifest["optimizer"]
    assert opt["name"] == "adamw"
    eager = copy.deepcopy(model)
    params = adapter_parameters(eager)
    optimizer = torch.optim.AdamW(
        list(params.values()),
        lr=opt["lr"],
        betas=tuple(opt["betas"]),
        eps=opt["eps"],
        weight_decay=opt["weight_decay"],
    )
    masks = TrainingWrapper(model).example_masks()
    runtime = OrtTrainer(onnx_bundle.path, opt["lr"])
    ort_losses, eager_losses = [], []
    eager.train()
    for batch in parity_batches(model, tokenizer):
        inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
        ort_losses.append(runtime.step((*inputs, *masks)))
        loss = eager(*inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        eager_losses.append(loss.item())
    assert ort_losses[-1] < ort_losses[0]
    np.testing.assert_allclose(ort_losses, eager_losses, rtol=1e-3)
    trainable = {e["name"] for e in onnx_bundle.manifest["trainable"]}
    assert trainable == {f"model.{n}" for n in params}
    for name, param in params.items():
        torch.testing.assert_close(runtime.parameter(f"model.{name}"), param.detach(), rtol=1e-3, atol=1e-5)


def test_zero_masks_give_frozen_backbone_loss(onnx_bundle, lora_model):
    model, tokenizer = lora_model
    batch = parity_batches(model, tokenizer, n=1)[0]
    inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
    runtime = OrtTrainer(onnx_bundle.path, 1e-3)
    zeros = [torch.zeros_like(m) for m in TrainingWrapper(model).example_masks()]
    base = copy.deepcopy(model)
    remove_adapters(base)
    with torch.no_grad():
        frozen = float(base(*inputs).loss)
        adapted = float(model(*inputs).loss)
    assert runtime.evaluate((*inputs, *zeros))[0] == pytest.approx(frozen, rel=1e-5)
    ones = TrainingWrapper(model).example_masks()
    loss, logits = runtime.evaluate((*inputs, *ones))
    assert loss == pytest.approx(adapted, rel=1e-5)
    assert abs(adapted - frozen) > 1e-4
    with torch.no_grad():
        torch.testing.assert_close(logits, model(*inputs).logits, rtol=1e-4, atol=1e-4)


def test_inference_model_exported_after_training(onnx_bundle, lora_model, tmp_path):
    import onnxruntime as ort

    model, tokenizer = lora_model
    batch = parity_batches(model, tokenizer, n=1)[0]
    inputs = (
        batch["pixel_values"],
        batch["input_ids"],
        batch["labels"],
        *TrainingWrapper(model).example_masks(),
    )
    runtime = OrtTrainer(onnx_bundle.path, 1e-2)
    runtime.step(inputs)
    path = runtime.export_inference(tmp_path / contract.ONNX_INFERENCE_FILE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    loss, logits = session.run(None, feeds)
    expected_loss, expected_logits = runtime.evaluate(inputs)
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-4, atol=1e-5)


def test_hydra_adamw_parity(tmp_path):
    """Hydra (parallel + sequential branches, two masks per module) trains the same in ORT."""
    from mobile_peft.export import export_bundle

    from .conftest import tiny_with_adapters

    model, tokenizer = tiny_with_adapters("hydra")
    bundle = export_bundle((model, tokenizer), "onnx", tmp_path / "b", batch_size=2)
    assert len(bundle.manifest["rank_schedule"]["mask_inputs"]) == 2 * 6
    assert_ort_adamw_matches_eager(bundle, model, tokenizer, steps=5, rel=1e-3)


def test_schedule_phases_apply_through_mask_inputs(lora_model, tmp_path):
    """A two-phase rank schedule goes into the manifest; feeding phase 1's masks (built from the
    manifest alone) gives the eager model's loss at that phase, with no re-export."""
    from mobile_peft.allocators import Phase, current_schedule
    from mobile_peft.export import export_bundle

    model, tokenizer = lora_model
    schedule = current_schedule(model)
    half = {m: {s: r // 2 for s, r in slots.items()} for m, slots in schedule.phases[0].ranks.items()}
    schedule.phases.append(Phase(10, half))
    bundle = export_bundle((model, tokenizer), "onnx", tmp_path / "b", schedule=schedule, batch_size=2)
    manifest_schedule = bundle.manifest["rank_schedule"]
    assert [p["start_step"] for p in manifest_schedule["phases"]] == [0, 10]
    phase = manifest_schedule["phases"][1]
    masks = []
    for entry in manifest_schedule["mask_inputs"]:  # what a phone does: ranks -> prefix masks, in input order
        rank = phase["ranks"][entry["module"]][entry["slot"]]
        masks.append(torch.tensor([1.0] * rank + [0.0] * (entry["r_max"] - rank)))
    batch = parity_batches(model, tokenizer, n=1)[0]
    inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
    eager = copy.deepcopy(model)
    schedule.apply(eager, step=10)
    with torch.no_grad():
        expected = float(eager(*inputs).loss)
    assert OrtTrainer(bundle.path, 1e-3).evaluate((*inputs, *masks))[0] == pytest.approx(expected, rel=1e-5)


def test_native_info_lines_go_to_the_debug_log(capfd, caplog):
    """ORT's C++ INFO lines during artifact generation are logged at DEBUG, not printed; anything
    else written to file descriptor 2 still reaches stderr."""
    import logging
    import os

    from mobile_peft.export.onnx import _native_info_to_debug_log

    with caplog.at_level(logging.DEBUG, logger="mobile_peft.export.onnx"), _native_info_to_debug_log():
        os.write(2, b"2026-11-25 [I:onnxruntime:Default, graph.cc:1 X] pass applied\n")
        os.write(2, b"2026-11-25 [E:onnxruntime:Default, graph.cc:2 Y] real problem\n")
    err = capfd.readouterr().err
    assert "real problem" in err and "pass applied" not in err
    assert any("pass applied" in r.getMessage() for r in caplog.records)


def test_export_prints_no_ort_info_lines(capfd, tmp_path):
    from mobile_peft.export import export_bundle
    from mobile_peft.models import build_model

    export_bundle(build_model("tiny", quant="int8"), "onnx", tmp_path / "b", rank=2, batch_size=1)
    assert "[I:onnxruntime" not in capfd.readouterr().err
