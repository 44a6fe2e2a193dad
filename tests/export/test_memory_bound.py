"""The memory lower bound recorded at export: saved activations counted by storage, dequantised
frozen weights excluded, terms summed into the manifest's ``memory_bound``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mobile_peft.core import contract
from mobile_peft.core.manifest import manifest_problems, validate_bundle
from mobile_peft.export import memory_bound as mb
from mobile_peft.export.bundle import prepare_model
from mobile_peft.export.formats import ExportJob, OptimizerDefaults
from mobile_peft.models import build_model


def _job(quant: str = "int8", batch: int = 2, targets: str | None = None, adapter: str = "lora") -> ExportJob:
    from mobile_peft.adapters import apply_adapters
    from mobile_peft.train.job import make_adapter_config

    model, tokenizer = build_model("tiny", quant=quant, seed=0)
    if targets is not None:
        apply_adapters(model, make_adapter_config(adapter, 4, None, targets))
    model, tokenizer = prepare_model((model, tokenizer), adapter=adapter, rank=4)
    return ExportJob(model, tokenizer, None, batch, 0, OptimizerDefaults("sgd", 0.1))


def test_saved_bytes_of_a_known_graph():
    """relu(linear(x)) with a trainable weight keeps x [2, 4] (weight gradient) and the relu output
    [2, 3]: 8 + 6 floats. The weight saved for the input gradient is a parameter, not counted."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    assert mb.saved_activation_bytes(layer, lambda: torch.relu(layer(x)).sum()) == (8 + 6) * 4
    assert layer.weight.grad is None  # the count leaves no gradients behind


def test_dequantised_weights_do_not_count():
    """The same model stored fp32, int8 or int4 keeps the same activations: the fp32 copies that
    QuantLinear makes (and F.linear saves) are excluded; without the exclusion int8 counts more."""
    counts = {q: mb.adapter_step_terms(_job(q)) for q in ("none", "int8", "int4")}
    assert counts["none"] == counts["int8"] == counts["int4"]
    real = mb._recording_dequantised
    try:
        mb._recording_dequantised = lambda model, into: contextlib.nullcontext()
        unexcluded = mb.adapter_step_terms(_job("int8"))
    finally:
        mb._recording_dequantised = real
    assert unexcluded[0] == counts["int8"][0] and unexcluded[1] > counts["int8"][1]


def test_activations_grow_with_batch_and_stop_at_the_lowest_adapter():
    one, eight = mb.adapter_step_terms(_job(batch=1)), mb.adapter_step_terms(_job(batch=8))
    assert one[0] == eight[0] and 6 * one[1] < eight[1] < 9 * one[1]  # about linear in the batch
    late = mb.adapter_step_terms(_job(targets=r"language_model\.model\.layers\.3\.self_attn\.q_proj"))
    assert late[1] < one[1]  # one adapter in the last layer: no backward below it, nothing kept there


def test_head_step_terms():
    job = _job()
    hidden = int(job.model.config.text["hidden_size"])
    trainable, activations = mb.head_step_terms(job, 10)
    assert trainable == (10 * hidden + 10) * 4
    assert activations >= job.batch_size * hidden * 4  # at least the features, kept for the weight gradient


def test_exported_manifest_records_the_bound(onnx_bundle):
    manifest = validate_bundle(onnx_bundle.path)
    bound = manifest.memory_bound
    K = contract.MemoryBoundKey
    assert set(bound) == set(contract.MEMORY_BOUND_KEYS)
    assert bound[K.BACKBONE_BYTES] == manifest.backbone[contract.BackboneKey.TOTAL_BYTES]
    assert bound[K.TRAINABLE_BYTES] == 4 * sum(t.numel for t in manifest.trainable) == bound[K.GRADIENT_BYTES]
    assert bound[K.OPTIMIZER_STATES] == 2 and bound[K.OPTIMIZER_STATE_BYTES] == 2 * bound[K.TRAINABLE_BYTES]  # AdamW
    assert bound[K.BATCH_SIZE] == manifest.input_spec.batch_size and bound[K.ACTIVATION_BYTES] > 0
    raw = dict(manifest.raw)
    raw.pop(contract.Key.MEMORY_BOUND)
    assert manifest_problems(raw) == []  # bundles exported before the bound stay valid
