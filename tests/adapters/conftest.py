"""Small models shared by the adapter tests (random weights, built offline in milliseconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from mobile_peft.adapters import AdapterLayer
from mobile_peft.quant import QuantLinear


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).eval()


def tiny_clip(seed: int = 0) -> CLIPVisionModel:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    return CLIPVisionModel(config).eval()


class TinyVLM(nn.Module):
    """The attribute layout of the SDK's VLM: vision_tower, projector, language_model."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.vision_tower = tiny_clip(seed)
        self.projector = nn.Linear(32, 64)
        self.language_model = tiny_llama(seed)


def make_base(kind: str, fan_in: int, fan_out: int, seed: int = 0) -> nn.Module:
    """A frozen linear base: 'linear' (with bias), 'linear_nobias', 'int8', 'int4', 'float64'."""
    torch.manual_seed(seed)
    linear = nn.Linear(fan_in, fan_out, bias=kind != "linear_nobias")
    if kind in ("int8", "int4"):
        return QuantLinear.from_linear(linear, kind, group_size=16)
    return linear.double() if kind == "float64" else linear


@torch.no_grad()
def randomize(layer: AdapterLayer, std: float = 0.2) -> None:
    """Give every adapter tensor (up-projections included, which start at zero) random values."""
    for param in layer.adapter_params().values():
        param.normal_(0.0, std)


@torch.no_grad()
def randomize_model(model: nn.Module, std: float = 0.2) -> None:
    from mobile_peft.adapters import adapter_layers

    for layer in adapter_layers(model).values():
        randomize(layer, std)


# pytest runs with --import-mode=importlib, so test modules cannot import this file: the helpers
# reach them as fixtures.
@pytest.fixture
def llama() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture
def clip() -> CLIPVisionModel:
    return tiny_clip()


@pytest.fixture
def vlm_factory():
    return TinyVLM


@pytest.fixture
def llama_factory():
    return tiny_llama


@pytest.fixture(name="make_base")
def make_base_fixture():
    return make_base


@pytest.fixture(name="randomize")
def randomize_fixture():
    return randomize


@pytest.fixture(name="randomize_model")
def randomize_model_fixture():
    return randomize_model
