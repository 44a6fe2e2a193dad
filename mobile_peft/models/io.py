"""Build, save and load mobile VLMs.

A model directory (our format) holds ``config.json`` (:class:`MobileVLMConfig`),
``model.safetensors`` and ``tokenizer.json``. :func:`load_model` also reads two Hugging Face
layouts from a local directory, converting them on the fly:

* LLaVA (``LlavaForConditionalGeneration``): ``model.vision_tower.*``,
  ``model.multi_modal_projector.*``, ``model.language_model.*``, ``lm_head.*`` (the older
  ``vision_tower.*`` / ``language_model.model.*`` layout too);
* MobileVLM (``MobileLlamaForCausalLM``): Llama keys plus ``model.mm_projector.*`` and
  ``model.vision_tower.vision_tower.*``; ``mm_projector_type`` ldpnet or mlp2x_gelu. The
  vision tower config comes from ``vision_config`` in ``config.json`` or from a local CLIP
  directory named by ``mm_vision_tower``.

Weights are read with safetensors only (no pickle).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.errors import CheckpointError, ConfigError
from ..core.spec import CLIP_MEAN, CLIP_STD, InputSpec
from ..data.tokenizer import build_word_tokenizer, load_tokenizer, save_tokenizer
from ..quant import quantize_model
from .config import FORMAT_NAME, MobileVLMConfig
from .presets import PRESETS, preset_config
from .projectors import ProjectorConfig
from .vlm import MobileVLM

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


def build_model(preset: str, quant: str = "none", seed: int = 0, device: str | torch.device = "cpu") -> tuple[MobileVLM, Any]:
    """A preset and its tokeniser. Presets have random weights and the word-level tokeniser (no
    checkpoint can be downloaded here), except those built on a local GGUF language model
    (``smollm2-vlm``): pretrained decoder and its own BPE tokeniser, random vision tower."""
    entry = PRESETS[preset]
    if entry.language_model is not None:
        from .gguf import compose_vlm, load_gguf_language_model

        loaded = load_gguf_language_model(entry.language_model())
        with torch.device(device):
            model = compose_vlm(loaded, entry.vision_tower or "clip-tiny", name=preset, seed=seed)
        model.config.quant = quant
        quantize_model(model, quant, model.config.quant_group_size)
        return model, loaded.tokenizer
    tokenizer = build_word_tokenizer()
    config = preset_config(preset, tokenizer.get_vocab_size())
    if config.text["vocab_size"] < tokenizer.get_vocab_size():
        raise ConfigError(f"preset {preset!r} has a vocabulary of {config.text['vocab_size']}, smaller than the tokeniser's.")
    config.quant = quant
    torch.manual_seed(seed)
    with torch.device(device):
        model = MobileVLM(config)
    quantize_model(model, quant, config.quant_group_size)
    return model, tokenizer


def meta_model(preset: str) -> MobileVLM:
    """The preset's architecture on the meta device: parameter counts without allocating."""
    config = preset_config(preset, vocab_size=64)
    with torch.device("meta"):
        return MobileVLM(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model: MobileVLM, tokenizer: Any, directory: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json``. Adapter layers are
    not saved here (see :func:`mobile_peft.adapters.save_adapter`)."""
    from ..adapters.base import adapter_layers

    if adapter_layers(model):
        raise ConfigError("save_model saves the frozen base; this model carries adapters. Save them with save_adapter().")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in _aliases(model)}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    save_tokenizer(tokenizer, directory)
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).") from None


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    single = directory / WEIGHTS_FILE
    if single.exists():
        return load_file(str(single))
    index = directory / "model.safetensors.index.json"
    if index.exists():
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(_read_json(index)["weight_map"].values())):
            state.update(load_file(str(directory / shard)))
        return state
    found = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(
        f"{directory} holds no {WEIGHTS_FILE} (or sharded model.safetensors.index.json); found {found}. "
        "Only safetensors weights are read (no pickle): re-save the checkpoint with save_pretrained(safe_serialization=True)."
    )


def _aliases(model: nn.Module) -> dict[str, str]:
    """Second names of one tensor (a tied ``lm_head.weight`` is ``embed_tokens.weight``): alias ->
    the first name. safetensors stores a tensor once, so aliases are left out and restored on load."""
    first: dict[tuple[int, tuple[int, ...]], str] = {}
    aliases = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
    return aliases


def _load_state(model: MobileVLM, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    state = dict(state)
    for alias, name in _aliases(model).items():
        if alias not in state and name in state:
            state[alias] = state[name]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {source} do not fit the architecture in its config: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
    bad = [k for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{source}: {len(bad)} tensors have the wrong shape, e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}.")
    model.load_state_dict(state, strict=True)


def _tokenizer_of(directory: Path) -> Any:
    if not (directory / TOKENIZER_FILE).exists():
        raise CheckpointError(
            f"{directory} has no {TOKENIZER_FILE}; a checkpoint must bring its tokeniser "
            "(save it with tokenizer.save_pretrained(dir) or tokenizers' Tokenizer.save)."
        )
    return load_tokenizer(directory)


def _input_spec(directory: Path, image_size: int, raw: dict[str, Any]) -> InputSpec:
    mean, std = CLIP_MEAN, CLIP_STD
    processor = directory / "preprocessor_config.json"
    if processor.exists():
        p = _read_json(processor)
        mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
    template = raw.get("mobile_peft_prompt_template", InputSpec.__dataclass_fields__["prompt_template"].default)
    return InputSpec(image_size=image_size, image_mean=mean, image_std=std, prompt_template=template)


def _clean_hf(cfg: dict[str, Any]) -> dict[str, Any]:
    drop = {"architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "auto_map"}
    return {k: v for k, v in cfg.items() if k not in drop and not k.startswith("mm_") and not k.startswith("mobile_peft")}


def _vision_type(vision: dict[str, Any]) -> str:
    kind = vision.get("model_type", "clip_vision_model")
    if kind.startswith("siglip"):
        return "siglip"
    if kind.startswith("clip"):
        return "clip"
    raise CheckpointError(f"vision tower model_type {kind!r} is not supported; expected a CLIP or SigLIP vision model.")


_LLAVA_RENAMES = (
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "projector."),
    ("model.language_model.", "language_model.model."),
    ("multi_modal_projector.", "projector."),
    ("lm_head.", "language_model.lm_head."),
)


def _rename(state: dict[str, torch.Tensor], renames: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        # transformers < 5 nested the vision towers one level deeper (``vision_model.``).
        out[key.replace("vision_tower.vision_model.", "vision_tower.", 1)] = value
    return out


def _load_llava(directory: Path, raw: dict[str, Any]) -> tuple[MobileVLM, Any]:
    vision, text = dict(raw["vision_config"]), dict(raw["text_config"])
    if text.get("model_type", "llama") != "llama":
        raise CheckpointError(f"LLaVA checkpoint with a {text.get('model_type')!r} language model; only Llama-style decoders are supported.")
    if raw.get("vision_feature_select_strategy", "default") not in ("default", "full"):
        raise CheckpointError(f"vision_feature_select_strategy {raw['vision_feature_select_strategy']!r} is not supported.")
    layer = raw.get("vision_feature_layer", -2)
    if isinstance(layer, list):
        raise CheckpointError("LLaVA checkpoints that concatenate several vision feature layers are not supported.")
    vtype = _vision_type(vision)
    config = MobileVLMConfig(
        name=raw.get("_name_or_path") or directory.name,
        vision_type=vtype,
        vision=_clean_hf(vision),
        text=_clean_hf(text),
        projector=ProjectorConfig(type="mlp", bias=raw.get("multimodal_projector_bias", True)),
        vision_feature_layer=layer,
        drop_cls=raw.get("vision_feature_select_strategy", "default") == "default" and vtype == "clip",
        input_spec=_input_spec(directory, int(vision["image_size"]), raw),
    )
    state = _rename(_read_weights(directory), _LLAVA_RENAMES)
    state.setdefault("language_model.lm_head.weight", state.get("language_model.model.embed_tokens.weight"))
    model = MobileVLM(config)
    _load_state(model, state, directory)
    return model, _tokenizer_of(directory)


_MOBILEVLM_RENAMES = (
    ("model.mm_projector.", "projector."),
    ("model.vision_tower.vision_tower.", "vision_tower."),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
_MOBILEVLM_PROJECTORS = {"ldpnet": "ldp", "mlp2x_gelu": "mlp"}


def _load_mobilevlm(directory: Path, raw: dict[str, Any]) -> tuple[MobileVLM, Any]:
    ptype = raw.get("mm_projector_type")
    if ptype not in _MOBILEVLM_PROJECTORS:
        raise CheckpointError(f"mm_projector_type {ptype!r} is not supported; expected one of {sorted(_MOBILEVLM_PROJECTORS)}.")
    state = _rename(_read_weights(directory), _MOBILEVLM_RENAMES)
    vision = raw.get("vision_config")
    tower_dir = Path(str(raw.get("mm_vision_tower", "")))
    if vision is None and (tower_dir / CONFIG_FILE).exists():
        vision = _read_json(tower_dir / CONFIG_FILE)
        vision = vision.get("vision_config", vision)
        if not any(k.startswith("vision_tower.") for k in state):
            tower_state = _read_weights(tower_dir)
            state.update(_rename({"vision_tower." + k: v for k, v in tower_state.items()}, ()))
    if vision is None:
        raise CheckpointError(
            f"{directory} is a MobileVLM checkpoint, but its vision tower config is unknown: add a 'vision_config' "
            f"to config.json, or set 'mm_vision_tower' to a local CLIP directory (got {raw.get('mm_vision_tower')!r}). "
            "Nothing is downloaded."
        )
    text = _clean_hf({k: v for k, v in raw.items() if k != "vision_config"})
    config = MobileVLMConfig(
        name=raw.get("_name_or_path") or directory.name,
        vision_type=_vision_type(vision),
        vision=_clean_hf(vision),
        text=text,
        projector=ProjectorConfig(type=_MOBILEVLM_PROJECTORS[ptype]),
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        drop_cls=raw.get("mm_vision_select_feature", "patch") == "patch",
        input_spec=_input_spec(directory, int(vision["image_size"]), raw),
    )
    if config.projector.type == "mlp":
        state = _rename(state, (("projector.0.", "projector.linear_1."), ("projector.2.", "projector.linear_2.")))
    model = MobileVLM(config)
    _load_state(model, state, directory)
    return model, _tokenizer_of(directory)


def _load_native(directory: Path, raw: dict[str, Any]) -> tuple[MobileVLM, Any]:
    config = MobileVLMConfig.from_dict(raw)
    model = MobileVLM(config)
    quantize_model(model, config.quant, config.quant_group_size)
    _load_state(model, _read_weights(directory), directory)
    return model, _tokenizer_of(directory)


def checkpoint_layout(raw: dict[str, Any]) -> str:
    """``native``, ``llava`` or ``mobilevlm``; ``unknown`` otherwise."""
    if raw.get("format") == FORMAT_NAME:
        return "native"
    if raw.get("model_type") == "llava" or "LlavaForConditionalGeneration" in raw.get("architectures", []):
        return "llava"
    if "mm_projector_type" in raw or raw.get("model_type") == "mobilevlm":
        return "mobilevlm"
    return "unknown"


_LOADERS = {"native": _load_native, "llava": _load_llava, "mobilevlm": _load_mobilevlm}


def load_model(directory: str | Path, quant: str | None = None) -> tuple[MobileVLM, Any]:
    """Load a model directory (ours, LLaVA-style or MobileVLM-style) and its tokeniser.

    ``quant`` (int8/int4) quantises a float model after loading; a model saved quantised keeps
    its mode (asking for another one is an error, since the float weights are gone).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {str(directory)!r} does not exist; build one with `mobile-peft build --preset tiny --out DIR`.")
    if not (directory / CONFIG_FILE).exists():
        raise CheckpointError(
            f"{directory} has no {CONFIG_FILE}; expected a mobile-peft model directory, or a LLaVA / MobileVLM "
            "checkpoint saved with save_pretrained()."
        )
    raw = _read_json(directory / CONFIG_FILE)
    layout = checkpoint_layout(raw)
    if layout == "unknown":
        raise CheckpointError(
            f"{directory}/config.json describes neither a mobile-peft model (format={FORMAT_NAME!r}) nor a LLaVA "
            f"(model_type 'llava') nor a MobileVLM checkpoint ('mm_projector_type'); got model_type="
            f"{raw.get('model_type')!r}, architectures={raw.get('architectures')!r}."
        )
    model, tokenizer = _LOADERS[layout](directory, raw)
    logger.info("loaded %s checkpoint from %s", layout, directory)
    if quant and quant != "none" and quant != model.config.quant:
        if model.config.quant != "none":
            raise ConfigError(f"{directory} is stored {model.config.quant}; it cannot be re-quantised to {quant}. Rebuild from a float model.")
        model.config.quant = quant
        quantize_model(model, quant, model.config.quant_group_size)
    model.eval()
    return model, tokenizer


__all__ = ["PRESETS", "build_model", "count_parameters", "load_model", "meta_model", "save_model"]
