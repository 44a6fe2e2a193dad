"""Model presets: real architectures, random weights unless a local checkpoint is given.

Each preset owns its default configuration (minGPT style). Published sizes are the parameter
counts the model cards give; tests check the presets against them (±5%) on the meta device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.registry import Registry
from ..core.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, InputSpec
from .config import MobileVLMConfig
from .projectors import ProjectorConfig


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[[int], MobileVLMConfig]  # vocab_size -> config
    published_params: int | None  # from the model card; None for tiny
    source: str  # where the architecture comes from


PRESETS: Registry[Preset] = Registry("model preset")


def _llama(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, inter: int, tied: bool) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": tied,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def _vit(hidden: int, layers: int, heads: int, inter: int, image: int, patch: int) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image,
        "patch_size": patch,
    }


def _tiny(vocab: int) -> MobileVLMConfig:
    return MobileVLMConfig(
        name="tiny",
        vision_type="clip",
        vision=_vit(hidden=64, layers=2, heads=4, inter=128, image=32, patch=8),
        text=_llama(vocab, hidden=128, layers=4, heads=4, kv_heads=2, inter=256, tied=False),
        projector=ProjectorConfig(type="mlp"),
        vision_feature_layer=-1,
        input_spec=InputSpec(image_size=32, image_mean=CLIP_MEAN, image_std=CLIP_STD, max_text_len=24),
    )


def _smolvlm_256m(vocab: int) -> MobileVLMConfig:
    # SmolVLM-256M: SigLIP base patch-16/512 (93M) + SmolLM2-135M decoder, pixel-shuffle x4
    # connector (1024 patches -> 64 image tokens), untied lm_head.
    return MobileVLMConfig(
        name="smolvlm-256m",
        vision_type="siglip",
        vision=_vit(hidden=768, layers=12, heads=12, inter=3072, image=512, patch=16),
        text=_llama(vocab, hidden=576, layers=30, heads=9, kv_heads=3, inter=1536, tied=False),
        projector=ProjectorConfig(type="pixel_shuffle", scale_factor=4),
        vision_feature_layer=-1,
        input_spec=InputSpec(image_size=512, image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, max_text_len=32),
    )


def _mobilevlm(name: str, vocab: int, hidden: int, layers: int, heads: int, inter: int) -> MobileVLMConfig:
    # MobileVLM: CLIP ViT-L/14-336 (select layer -2, CLS dropped, 576 patches) + LDP (4x fewer
    # tokens: 144) + MobileLLaMA.
    return MobileVLMConfig(
        name=name,
        vision_type="clip",
        vision=_vit(hidden=1024, layers=24, heads=16, inter=4096, image=336, patch=14),
        text=_llama(vocab, hidden=hidden, layers=layers, heads=heads, kv_heads=heads, inter=inter, tied=False),
        projector=ProjectorConfig(type="ldp"),
        vision_feature_layer=-2,
        input_spec=InputSpec(image_size=336, image_mean=CLIP_MEAN, image_std=CLIP_STD, max_text_len=32),
    )


PRESETS.register("tiny")(Preset("tiny", _tiny, None, "a few-hundred-thousand-parameter CLIP + Llama for tests and the demo"))
PRESETS.register("smolvlm-256m")(
    Preset("smolvlm-256m", _smolvlm_256m, 256_484_928, "HuggingFaceTB/SmolVLM-256M-Instruct model card (256M)")
)
PRESETS.register("mobilevlm-1.7b")(
    Preset(
        "mobilevlm-1.7b",
        lambda vocab: _mobilevlm("mobilevlm-1.7b", vocab, hidden=2048, layers=24, heads=16, inter=5632),
        1_700_000_000,
        "MobileVLM (arXiv 2312.16886): MobileLLaMA-1.4B + CLIP ViT-L/14-336 + LDP = 1.7B",
    )
)
PRESETS.register("mobilevlm-3b")(
    Preset(
        "mobilevlm-3b",
        lambda vocab: _mobilevlm("mobilevlm-3b", vocab, hidden=2560, layers=32, heads=32, inter=6912),
        3_000_000_000,
        "MobileVLM (arXiv 2312.16886): MobileLLaMA-2.7B + CLIP ViT-L/14-336 + LDP = 3B",
    )
)

# Vocabulary sizes of the real tokenisers (the architectures' embedding tables). With random
# weights the presets still use the word-level tokeniser, whose ids are a prefix of this range.
PRESET_VOCAB = {"tiny": None, "smolvlm-256m": 49_280, "mobilevlm-1.7b": 32_000, "mobilevlm-3b": 32_000}


def preset_config(name: str, vocab_size: int) -> MobileVLMConfig:
    """The config of preset ``name``; ``vocab_size`` sizes tiny's embedding table (the large
    presets keep their real vocabulary size, which must be at least ``vocab_size``)."""
    preset = PRESETS[name]
    real_vocab = PRESET_VOCAB[name]
    return preset.build(real_vocab if real_vocab is not None else vocab_size)
