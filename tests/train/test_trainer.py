"""The eager reference trainer: adapters on every tower train, only adapters change, errors."""

import copy

import pytest
import torch

from mobile_peft.adapters import adapter_parameters, apply_adapters
from mobile_peft.core.errors import ConfigError
from mobile_peft.quant import quantize_model
from mobile_peft.train import TrainConfig, evaluate, train
from mobile_peft.train.job import finetune, make_adapter_config, make_datasets

TOWERS = {
    "vision": r"vision_tower\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])",
    "projector": r"projector\.linear_[12]",
    "language": r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
}


@pytest.fixture(scope="module")
def parity_data(_tiny_base):
    model, tokenizer = _tiny_base
    return make_datasets("digits:parity", tokenizer, model.config.input_spec, train_limit=64, eval_limit=32)


@pytest.mark.parametrize("method", ["lora", "hydra"])
@pytest.mark.parametrize("tower", sorted(TOWERS))
def test_every_adapter_on_every_tower_trains_only_its_adapters(tiny, parity_data, method, tower):
    model, _ = tiny
    quantize_model(model, "int8")
    paths = apply_adapters(model, make_adapter_config(method, 4, None, TOWERS[tower]))
    prefix = {"vision": "vision_tower.", "projector": "projector.", "language": "language_model."}[tower]
    assert paths and all(p.startswith(prefix) for p in paths)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k and "parallel_" not in k and "sequential_" not in k}
    adapters_before = {k: v.detach().clone() for k, v in adapter_parameters(model).items()}
    result = train(model, parity_data[0], TrainConfig(steps=3, lr=1e-2, batch_size=8))
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    after = adapter_parameters(model)
    assert any(not torch.equal(adapters_before[k], after[k]) for k in after), "adapters did not move"
    for k, v in model.state_dict().items():
        if k in frozen_before:
            assert torch.equal(v, frozen_before[k]), f"frozen tensor {k} changed"


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_adapter_training_lowers_the_loss(tiny, parity_data, optimizer):
    model, _ = tiny
    lr = {"sgd": 0.5, "adamw": 3e-3}[optimizer]
    apply_adapters(model, make_adapter_config("lora", 8, None, model.config.default_targets))
    train_ds = parity_data[0]
    before = evaluate(model, train_ds).loss
    train(model, train_ds, TrainConfig(steps=30, lr=lr, batch_size=16, optimizer=optimizer))
    assert evaluate(model, train_ds).loss < before


def test_same_seed_same_result(tiny, parity_data):
    model, _ = tiny
    apply_adapters(model, make_adapter_config("lora", 4, None, model.config.default_targets))
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    ra = train(a, parity_data[0], TrainConfig(steps=4, batch_size=8))
    rb = train(b, parity_data[0], TrainConfig(steps=4, batch_size=8))
    assert ra.losses == rb.losses


def test_full_finetuning_trains_every_weight_and_needs_a_float_backbone(tiny, parity_data):
    model, _ = tiny
    result = train(copy.deepcopy(model), parity_data[0], TrainConfig(steps=1, batch_size=8, full=True))
    assert result.trainable_params == sum(p.numel() for p in model.parameters())
    quantize_model(model, "int8")
    with pytest.raises(ConfigError, match="float backbone"):
        train(model, parity_data[0], TrainConfig(steps=1, full=True))


def test_training_without_adapters_is_a_clear_error(tiny, parity_data):
    model, _ = tiny
    with pytest.raises(ConfigError, match="no adapters"):
        train(model, parity_data[0], TrainConfig(steps=1))


@pytest.mark.parametrize("kwargs", [{"optimizer": "lion"}, {"steps": -1}, {"lr": 0.0}, {"batch_size": 0}])
def test_bad_train_config(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_finetune_report_counts_and_accuracy_range(tiny, parity_data):
    model, _ = tiny
    quantize_model(model, "int8")
    report = finetune(model, *parity_data, TrainConfig(steps=2, batch_size=8), make_adapter_config("hydra", 2, None, model.config.default_targets))
    d = report.as_dict()
    assert 0 <= d["accuracy_before"] <= 1 and 0 <= d["accuracy_after"] <= 1
    assert d["trainable_params"] == sum(p.numel() for p in adapter_parameters(model).values())
    assert d["backbone_linear_weight_bytes"] < d["backbone_total_bytes"]
