"""The ORT training graph rebuilds frozen weights in the backward (``export/_onnx_recompute.py``):
no backward node reads a forward dequantised copy, and training is unchanged by it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from .conftest import assert_ort_adamw_matches_eager, parity_batches, tiny_with_adapters

pytest.importorskip("onnxruntime.training")

from mobile_peft.core import contract  # noqa: E402
from mobile_peft.export import export_bundle  # noqa: E402
from mobile_peft.export import onnx as onnx_export  # noqa: E402
from mobile_peft.export._onnx_recompute import _GRAD_MARK, _Graph  # noqa: E402
from mobile_peft.export.onnx import OrtTrainer, quantized_weights  # noqa: E402
from mobile_peft.export.wrappers import TrainingWrapper  # noqa: E402


def _backward_reads_of_dequantised_weights(path, weights) -> tuple[int, int]:
    """(reads of forward dequantised tensors by backward nodes, recomputed copies read)."""
    import onnx

    model = onnx.load(str(path))
    graph = _Graph(model.graph, {n for w in weights.values() for n in (w.qweight, w.scales)})
    forward = recomputed = 0
    for node in model.graph.node:
        if _GRAD_MARK not in node.name:
            continue
        for name in node.input:
            producer = graph.producer.get(name)
            if producer is not None and producer.name.startswith("/recompute/"):
                recomputed += 1
            elif name in graph.from_weights:
                forward += 1
    return forward, recomputed


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_backward_rebuilds_weights_and_trains_the_same(quant, tmp_path, monkeypatch):
    model, tokenizer = tiny_with_adapters("lora", quant=quant)
    weights = quantized_weights(model)
    rebuilt = export_bundle((copy.deepcopy(model), tokenizer), "onnx", tmp_path / "rebuilt", batch_size=2)
    monkeypatch.setattr(onnx_export, "recompute", lambda *args: 0)
    kept = export_bundle((copy.deepcopy(model), tokenizer), "onnx", tmp_path / "kept", batch_size=2)

    before = _backward_reads_of_dequantised_weights(kept.path / contract.ONNX_TRAINING_FILE, weights)
    after = _backward_reads_of_dequantised_weights(rebuilt.path / contract.ONNX_TRAINING_FILE, weights)
    # the adapted layers below the top one need their frozen weight for the input gradient
    assert before[0] > 0 and before[1] == 0
    assert after == (0, before[0])

    lr = rebuilt.manifest["optimizer"]["lr"]
    runs = [OrtTrainer(rebuilt.path, lr), OrtTrainer(kept.path, lr)]
    masks = TrainingWrapper(model).example_masks()
    for batch in parity_batches(model, tokenizer, n=3):
        inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"], *masks)
        losses = [run.step(inputs) for run in runs]
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for entry in rebuilt.manifest["trainable"]:
        np.testing.assert_allclose(
            runs[0].parameter(entry["name"]).numpy(), runs[1].parameter(entry["name"]).numpy(), rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_row_blocks_rebuild_their_own_rows(quant, tmp_path):
    """A layer dequantised in row blocks: each block's backward rebuilds that block only, and the
    bundle trains as eager PyTorch does (int4 too: its fp16 scales go to ORT as fp32)."""
    from mobile_peft.quant import QuantLinear

    model, tokenizer = tiny_with_adapters("lora", quant=quant)
    head = model.language_model.lm_head
    assert isinstance(head, QuantLinear)
    head.block_bytes = head.in_features * 4 * -(-head.out_features // 3)  # three blocks
    assert len(head.row_blocks()) == 3
    bundle = export_bundle((copy.deepcopy(model), tokenizer), "onnx", tmp_path / "b", batch_size=2)
    # ORT's checkpoint holds no fp16: int4 scales are stored, and counted in the manifest, as fp32
    assert "float16" not in bundle.manifest["backbone"]["bytes_by_dtype"]
    forward, recomputed = _backward_reads_of_dequantised_weights(
        bundle.path / contract.ONNX_TRAINING_FILE, quantized_weights(model)
    )
    assert forward == 0 and recomputed >= 3

    assert_ort_adamw_matches_eager(bundle, model, tokenizer, steps=3, rel=1e-4)
