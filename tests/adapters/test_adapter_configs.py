import pytest
from torch import nn

from mobile_peft.adapters import (
    ADAPTERS,
    AdapterMethod,
    HydraConfig,
    HydraLayer,
    LoraConfig,
    LoraLayer,
    apply_adapters,
    get_adapter_method,
    remove_adapters,
)
from mobile_peft.core.errors import ConfigError, RegistryError


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"r": 0}, "r=0"),
        ({"r": 2.5}, "r=2.5"),
        ({"lora_alpha": -1}, "lora_alpha=-1"),
        ({"lora_dropout": 1.0}, "lora_dropout=1.0"),
        ({"target_modules": None}, "target_modules=None"),
        ({"target_modules": []}, r"target_modules=\[\]"),
        ({"target_modules": "(q_proj"}, "not a valid regular expression"),
        ({"exclude_modules": [""]}, "exclude_modules"),
        ({"rank_pattern": {"q_proj": 0}}, r"rank_pattern\['q_proj'\]=0"),
        ({"alpha_pattern": {"q_proj": 0}}, "alpha_pattern"),
        ({"init": "pissa"}, "init='pissa'"),
    ],
)
def test_lora_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LoraConfig(**{"target_modules": ["q_proj"], **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"r_parallel": 0, "r_sequential": 0}, "r_parallel=0 and r_sequential=0"),
        ({"r_sequential": -1}, "r_sequential=-1"),
        ({"alpha": 0}, "alpha=0"),
        ({"rank_pattern": {"q_proj": {"parallel": 2, "other": 1}}}, "branches"),
        ({"alpha_pattern": {"q_proj": {"sequential": -2.0}}}, "alpha_pattern"),
        ({"dropout": -0.1}, "dropout=-0.1"),
    ],
)
def test_hydra_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        HydraConfig(**{"target_modules": ["q_proj"], **kwargs})


def test_target_containers_are_normalised():
    assert LoraConfig(target_modules=("v_proj", "q_proj")).target_modules == ["v_proj", "q_proj"]
    assert LoraConfig(target_modules={"v_proj", "q_proj"}).target_modules == ["q_proj", "v_proj"]


def test_lora_rank_and_alpha_patterns(llama):
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj"],
        rank_pattern={r"layers\.1\.self_attn\.q_proj": 2, "v_proj": 4},
        alpha_pattern={"q_proj": 3},
    )
    apply_adapters(llama, config)
    layer0 = llama.model.layers[0].self_attn
    layer1 = llama.model.layers[1].self_attn
    assert (layer0.q_proj.r, layer0.q_proj.scaling) == (8, 3 / 8)
    assert (layer1.q_proj.r, layer1.q_proj.scaling) == (2, 3 / 2)
    assert (layer0.v_proj.r, layer0.v_proj.scaling) == (4, 16 / 4)
    assert tuple(layer1.q_proj.lora_A.shape) == (2, 64) and tuple(layer1.q_proj.lora_B.shape) == (64, 2)


def test_hydra_patterns_apply_to_both_branches_or_the_named_one(llama):
    config = HydraConfig(
        r_parallel=4,
        r_sequential=2,
        alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj"],
        rank_pattern={"q_proj": 6, "k_proj": {"sequential": 0}},
        alpha_pattern={"v_proj": {"parallel": 2.0}},
    )
    apply_adapters(llama, config)
    attn = llama.model.layers[0].self_attn
    assert {n: s.r_max for n, s in attn.q_proj.rank_slots().items()} == {"parallel": 6, "sequential": 6}
    assert {n: s.r_max for n, s in attn.k_proj.rank_slots().items()} == {"parallel": 4, "sequential": 0}
    assert (attn.v_proj.parallel_scale, attn.v_proj.sequential_scale) == (2.0 / 4, 8 / 2)
    assert attn.k_proj.sequential_scale == 0.0
    with pytest.raises(ConfigError, match="rank 0 on both"):
        apply_adapters(
            nn.Sequential(nn.Linear(4, 4)), HydraConfig(target_modules=["0"], rank_pattern={"0": 0})
        )


def test_registry():
    assert get_adapter_method("lora").config_class is LoraConfig
    assert get_adapter_method("lora").layer_class is LoraLayer
    assert get_adapter_method("hydra") == AdapterMethod("hydra", HydraConfig, HydraLayer, "HYDRA")
    assert ADAPTERS.names() == ["hydra", "lora"]
    with pytest.raises(RegistryError, match="hydra, lora"):
        get_adapter_method("dora")
    with pytest.raises(RegistryError, match="already registered"):
        ADAPTERS.register("lora")(get_adapter_method("lora"))


def test_apply_refuses_an_adapted_model_and_leaves_a_bad_config_untouched(llama):
    before = [name for name, _ in llama.named_modules()]
    with pytest.raises(ConfigError):
        apply_adapters(llama, LoraConfig(target_modules=["q_proj", "self_attn"]))
    assert [name for name, _ in llama.named_modules()] == before
    apply_adapters(llama, LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match="already has adapter layers"):
        apply_adapters(llama, LoraConfig(target_modules=["v_proj"]))


def test_remove_adapters_restores_the_original_layers(llama):
    originals = {name: module for name, module in llama.named_modules() if name.endswith("v_proj")}
    apply_adapters(llama, HydraConfig(r_parallel=2, r_sequential=2, target_modules=["v_proj"]))
    llama.model.layers[0].self_attn.v_proj.merge()
    assert sorted(remove_adapters(llama)) == sorted(originals)
    assert all(llama.get_submodule(name) is module for name, module in originals.items())
