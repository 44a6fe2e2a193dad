import pytest
from torch import nn

from mobile_peft.adapters import match_targets, resolve_pattern
from mobile_peft.core.errors import ConfigError
from mobile_peft.quant import QuantLinear


def test_list_matches_exactly_or_as_dotted_suffix(llama):
    assert match_targets(llama, ["q_proj", "v_proj"]) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    assert match_targets(llama, ["self_attn.k_proj"]) == [
        "model.layers.0.self_attn.k_proj",
        "model.layers.1.self_attn.k_proj",
    ]
    assert match_targets(llama, ["model.layers.1.mlp.down_proj"]) == ["model.layers.1.mlp.down_proj"]
    with pytest.raises(ConfigError, match="matched no linear module"):
        match_targets(llama, ["proj"])  # not a dotted suffix of 'q_proj'


def test_string_is_a_full_regex(llama):
    assert match_targets(llama, r".*layers\.0\.mlp\.(gate|up)_proj") == [
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
    ]
    with pytest.raises(ConfigError, match="matched no linear module"):
        match_targets(llama, "q_proj")  # a regex must match the whole path


def test_exclusions_are_applied_first(llama):
    got = match_targets(llama, ["q_proj"], exclude_modules=["model.layers.0.self_attn.q_proj"])
    assert got == ["model.layers.1.self_attn.q_proj"]
    got = match_targets(llama, r".*_proj", exclude_modules=r".*\.mlp\..*|.*layers\.1\..*")
    assert got == [f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"]
    # an excluded non-linear module is no error: exclusions win before the linear check
    assert match_targets(llama, ["self_attn", "q_proj"], exclude_modules=["self_attn"])


def test_naming_a_non_linear_module_is_an_error(llama, clip):
    with pytest.raises(ConfigError, match=r"model\.layers\.0\.self_attn.*LlamaAttention"):
        match_targets(llama, ["self_attn"])
    with pytest.raises(ConfigError, match="Conv2d"):
        match_targets(clip, ["patch_embedding"])


def test_no_match_lists_targets_and_example_modules(llama):
    with pytest.raises(ConfigError) as info:
        match_targets(llama, ["query", "value"])
    message = str(info.value)
    assert "['query', 'value']" in message and "model.layers.0.self_attn.q_proj" in message
    with pytest.raises(ConfigError, match="excluded"):
        match_targets(llama, ["q_proj"], exclude_modules=["q_proj"])


def test_quantised_linears_are_eligible():
    model = nn.Sequential(QuantLinear.from_linear(nn.Linear(8, 8), "int8"), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ConfigError, match="ReLU"):
        match_targets(model, r"\d")
    assert match_targets(model, ["0", "2"]) == ["0", "2"]


def test_resolve_pattern_follows_peft():
    pattern = {r"layers\.0\.self_attn\.q_proj": 2, "q_proj": 4, "v_proj": 6}
    assert resolve_pattern("model.layers.0.self_attn.q_proj", pattern, 8) == 2  # first match wins
    assert resolve_pattern("model.layers.1.self_attn.q_proj", pattern, 8) == 4
    assert resolve_pattern("q_proj", pattern, 8) == 4
    assert resolve_pattern("model.layers.1.self_attn.xq_proj", pattern, 8) == 8  # needs a dot before
    assert resolve_pattern("model.layers.1.mlp.up_proj", pattern, 8) == 8
    assert resolve_pattern("a.v_proj", {"proj": 1}, 8) == 8  # the key must cover a whole segment
