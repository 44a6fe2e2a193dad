"""save_adapter / load_adapter: our own round trips, the effective-adapter rules and errors."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mobile_peft.adapters import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    HydraConfig,
    LoraConfig,
    adapter_layers,
    apply_adapters,
    load_adapter,
    save_adapter,
)
from mobile_peft.core.errors import CheckpointError, ConfigError

IDS = torch.tensor([[1, 5, 9, 42, 7, 3], [8, 8, 2, 99, 0, 4]])


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _mask_some(model: nn.Module) -> None:
    layers = list(adapter_layers(model).values())
    for name, slot in layers[0].rank_slots().items():
        mask = torch.zeros(slot.r_max)
        mask[0], mask[-1] = 1.0, 0.5  # two active ranks, one soft
        layers[0].set_rank_mask(name, mask)
    for name in layers[1].rank_slots():
        layers[1].set_rank(name, 0)  # nothing active: left out of the file


@pytest.mark.parametrize(
    "config",
    [
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            rank_pattern={"down_proj": 6},
            alpha_pattern={r"layers\.1\..*": 3},
        ),
        HydraConfig(
            r_parallel=4,
            r_sequential=2,
            alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            rank_pattern={"down_proj": {"sequential": 0}},
            alpha_pattern={"v_proj": 4},
        ),
    ],
    ids=["lora", "hydra"],
)
def test_round_trip(config, llama_factory, randomize_model, tmp_path):
    model = llama_factory()
    apply_adapters(model, config)
    randomize_model(model)
    _mask_some(model)
    expected = _logits(model)
    save_adapter(model, tmp_path)
    saved = json.loads((tmp_path / ADAPTER_CONFIG_NAME).read_text())
    assert saved["peft_type"] == config.peft_type
    assert "model.layers.0.self_attn.v_proj" not in saved["target_modules"]  # all ranks masked off

    fresh = llama_factory()
    paths = load_adapter(fresh, tmp_path)
    assert len(paths) == 5
    torch.testing.assert_close(_logits(fresh), expected, atol=1e-5, rtol=1e-5)
    first = adapter_layers(fresh)["model.layers.0.self_attn.q_proj"]
    assert {n: s.r_max for n, s in first.rank_slots().items()} == dict.fromkeys(first.rank_slots(), 2)


def test_file_contents_use_peft_keys_and_record_our_metadata(llama, randomize_model, tmp_path):
    vlm_root = "model.layers.1"
    apply_adapters(llama, LoraConfig(r=2, target_modules=r"model\.layers\.1\.self_attn\.(q|k)_proj"))
    randomize_model(llama)
    save_adapter(llama, tmp_path, root=vlm_root)
    with safe_open(str(tmp_path / ADAPTER_WEIGHTS_NAME), framework="pt") as handle:
        keys = sorted(handle.keys())
        meta = json.loads(handle.metadata()["mobile_peft"])
    assert keys == [
        "base_model.model.self_attn.k_proj.lora_A.weight",
        "base_model.model.self_attn.k_proj.lora_B.weight",
        "base_model.model.self_attn.q_proj.lora_A.weight",
        "base_model.model.self_attn.q_proj.lora_B.weight",
    ]
    assert meta["method"] == "lora" and meta["root"] == vlm_root and meta["format_version"] == 1
    saved = json.loads((tmp_path / ADAPTER_CONFIG_NAME).read_text())
    assert saved["target_modules"] == ["self_attn.q_proj", "self_attn.k_proj"]
    assert "mobile_peft" not in saved  # PEFT warns about unknown keys; ours live in the header
    with pytest.raises(ConfigError, match="not under root"):
        save_adapter(llama, tmp_path / "other", root="model.layers.0")


def test_bad_directories(llama_factory, tmp_path):
    model = llama_factory()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_adapter(model, tmp_path / "missing")
    with pytest.raises(CheckpointError, match="lacks adapter_config.json, adapter_model.safetensors"):
        load_adapter(model, tmp_path)
    (tmp_path / ADAPTER_CONFIG_NAME).write_text("{not json")
    save_file({"x": torch.zeros(1)}, str(tmp_path / ADAPTER_WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_adapter(model, tmp_path)
    (tmp_path / ADAPTER_CONFIG_NAME).write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(CheckpointError, match="IA3"):
        load_adapter(model, tmp_path)
    (tmp_path / ADAPTER_CONFIG_NAME).write_text(json.dumps({"r": 2}))
    with pytest.raises(CheckpointError, match="peft_type"):
        load_adapter(model, tmp_path)
    (tmp_path / ADAPTER_CONFIG_NAME).write_text(
        json.dumps({"peft_type": "LORA", "target_modules": ["q_proj"]})
    )
    (tmp_path / ADAPTER_WEIGHTS_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_adapter(model, tmp_path)
    assert not adapter_layers(model)
    with pytest.raises(CheckpointError, match="not a directory"):
        load_adapter(model, tmp_path / ADAPTER_CONFIG_NAME)
    apply_adapters(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(CheckpointError, match="not a directory"):
        save_adapter(model, tmp_path / ADAPTER_CONFIG_NAME)


def test_keys_that_do_not_match_the_model(llama_factory, clip, randomize_model, tmp_path):
    source = llama_factory()
    apply_adapters(source, LoraConfig(r=2, target_modules=["q_proj"]))
    save_adapter(source, tmp_path)
    with pytest.raises(ConfigError, match="matched no linear module"):
        load_adapter(clip, tmp_path)  # other architecture: the saved paths do not exist

    weights = tmp_path / ADAPTER_WEIGHTS_NAME
    with safe_open(str(weights), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    wrong_shape = dict(tensors, **{key: torch.zeros(2, 3)})
    save_file(wrong_shape, str(weights))
    target = llama_factory()
    with pytest.raises(ConfigError, match=r"shapes.*lora_A.*\(2, 3\)"):
        load_adapter(target, tmp_path)
    assert not adapter_layers(target)  # left as it was

    missing = {k: v for k, v in tensors.items() if k != key}
    save_file(dict(missing, extra=torch.zeros(1)), str(weights))
    with pytest.raises(
        ConfigError, match=r"missing from the file: .*q_proj\.lora_A.*not in the model: extra"
    ):
        load_adapter(target, tmp_path)
    assert not adapter_layers(target)


def test_save_errors(llama):
    with pytest.raises(ConfigError, match="no adapter layers"):
        save_adapter(llama, "unused")
    apply_adapters(llama, LoraConfig(r=2, target_modules=["q_proj"]))
    for layer in adapter_layers(llama).values():
        layer.set_rank("lora", 0)
    with pytest.raises(ConfigError, match="nothing to save"):
        save_adapter(llama, "unused")
