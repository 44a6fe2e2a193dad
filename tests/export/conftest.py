"""Fixtures of the export tests: a small tiny-preset model with randomised adapters, exported once
per session per format (exports take tens of seconds on 2 cores)."""

from __future__ import annotations

import copy

import pytest
import torch

from mobile_peft.adapters import adapter_parameters, apply_adapters
from mobile_peft.models import build_model
from mobile_peft.train.job import make_adapter_config, make_datasets

# Adapters on two late decoder layers keep the joint graph (and the export time) small while still
# covering attention and the gated MLP backward.
TEST_TARGETS = r"language_model\.model\.layers\.[23]\.(self_attn\.(q|v)_proj|mlp\.down_proj)"
BATCH = 2
STEPS = 20


def tiny_with_adapters(method: str = "lora", quant: str = "int8", seed: int = 0):
    model, tokenizer = build_model("tiny", quant=quant, seed=seed)
    apply_adapters(model, make_adapter_config(method, 4, None, TEST_TARGETS))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # up-projections start at zero; randomise them so the adapters matter
        for param in adapter_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.eval()
    return model, tokenizer


def parity_batches(model, tokenizer, n: int = STEPS, batch: int = BATCH) -> list[dict[str, torch.Tensor]]:
    train_ds, _ = make_datasets("digits:parity", tokenizer, model.config.input_spec, seed=0, train_limit=n * batch)
    items = [train_ds[i] for i in range(n * batch)]
    return [torch.utils.data.default_collate(items[i * batch : (i + 1) * batch]) for i in range(n)]


def assert_ort_adamw_matches_eager(bundle, model, tokenizer, steps: int, rel: float) -> None:
    """``steps`` AdamW steps of the ``onnx`` bundle in ORT give the eager model's losses."""
    from mobile_peft.export.onnx import OrtTrainer
    from mobile_peft.export.wrappers import TrainingWrapper

    lr = bundle.manifest["optimizer"]["lr"]
    eager = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(list(adapter_parameters(eager).values()), lr=lr, weight_decay=0.0)
    masks = TrainingWrapper(model).example_masks()
    runtime = OrtTrainer(bundle.path, lr)
    eager.train()
    for batch in parity_batches(model, tokenizer, n=steps):
        inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
        got = runtime.step((*inputs, *masks))
        loss = eager(*inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert got == pytest.approx(loss.item(), rel=rel)


@pytest.fixture(scope="session")
def lora_model():
    return tiny_with_adapters("lora")


@pytest.fixture(scope="session")
def pte_bundle(lora_model, tmp_path_factory):
    from mobile_peft.export import export_bundle

    out = tmp_path_factory.mktemp("pte") / "bundle"
    return export_bundle(copy.deepcopy(lora_model), "pte", out, batch_size=BATCH)


@pytest.fixture(scope="session")
def onnx_bundle(lora_model, tmp_path_factory):
    from mobile_peft.export import export_bundle

    out = tmp_path_factory.mktemp("onnx") / "bundle"
    return export_bundle(copy.deepcopy(lora_model), "onnx", out, batch_size=BATCH)
