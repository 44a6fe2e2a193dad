"""GGUF language models in: a Llama-family GGUF file (llama.cpp's format, what mobile developers
already hold) composed with a small vision tower and projector into a :class:`MobileVLM`.

The file is checked with the ``gguf`` package before anything is loaded: ``general.architecture``
must be ``llama`` and every tensor's type must be one ``gguf`` can dequantise (F32, F16, BF16 and
the llama.cpp block quantisations it implements). Weights and tokeniser then come from
transformers' own GGUF support (``LlamaForCausalLM.from_pretrained(dir, gguf_file=...)``, which
dequantises to fp32 and undoes llama.cpp's q/k row permutation; ``AutoTokenizer`` rebuilds the
``tokenizers`` BPE from the file's vocabulary and merges), always with ``local_files_only``: nothing
is downloaded. The vision tower and projector are random (a :data:`~.presets.VISION_TOWERS` entry)
until the alignment stage (:mod:`mobile_peft.train.align`) trains them.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, ConfigError, MissingExtraError
from ..core.spec import InputSpec
from .config import MobileVLMConfig
from .presets import VISION_TOWERS
from .vlm import MobileVLM

__all__ = [
    "GGUF_SUFFIX",
    "SUPPORTED_ARCHITECTURES",
    "GGUFInfo",
    "GGUFLanguageModel",
    "compose_vlm",
    "is_gguf_source",
    "load_gguf",
    "load_gguf_language_model",
    "read_gguf_info",
    "resolve_gguf",
    "write_gguf",
]

logger = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
SUPPORTED_ARCHITECTURES = ("llama",)
DEFAULT_VISION_TOWER = "clip-tiny"
# LlamaConfig fields that describe the architecture (everything else in a loaded config -- the
# GGUF quantisation record, names, dtype -- is not part of the model).
_LLAMA_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)
# Text tokens of a composed model: the longest embedded digits example plus this slack, and at
# least _MIN_TEXT_LEN. Every padded position costs a full decoder pass (and the 49k-wide head on a
# real vocabulary), so the length is kept tight; longer user data fails with an error naming
# InputSpec(max_text_len=...).
_TEXT_SLACK = 2
_MIN_TEXT_LEN = 16


def _gguf_module() -> Any:
    try:
        import gguf
    except ImportError:
        raise MissingExtraError("gguf", "gguf", "loading a GGUF language model") from None
    return gguf


def is_gguf_source(path: str | Path) -> bool:
    """Whether ``path`` is a ``.gguf`` file, or a directory with ``.gguf`` files and no ``config.json``
    (a directory with a ``config.json`` is a Hugging Face or mobile-peft checkpoint)."""
    path = Path(path)
    if path.suffix == GGUF_SUFFIX:
        return True
    return path.is_dir() and not (path / "config.json").exists() and any(path.glob(f"*{GGUF_SUFFIX}"))


def resolve_gguf(path: str | Path) -> Path:
    """The one GGUF file named by ``path`` (the file itself, or a directory holding exactly one)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob(f"*{GGUF_SUFFIX}"))
        if len(found) != 1:
            names = [p.name for p in found]
            raise CheckpointError(
                f"{path} holds {len(found)} {GGUF_SUFFIX} files {names}; expected exactly one. "
                "Pass the file itself: --from-pretrained DIR/NAME.gguf."
            )
        return found[0]
    if not path.is_file():
        raise CheckpointError(f"GGUF file {str(path)!r} does not exist; pass a local .gguf file or a directory holding one.")
    if path.suffix != GGUF_SUFFIX:
        raise CheckpointError(f"{path} is not a {GGUF_SUFFIX} file.")
    return path


@dataclass(frozen=True)
class GGUFInfo:
    """What the loader checks in a GGUF file, read from its header only."""

    path: Path
    architecture: str
    name: str
    tensor_types: dict[str, int]  # GGML type name -> number of tensors

    def summary(self) -> str:
        types = ", ".join(f"{n} x{c}" for n, c in sorted(self.tensor_types.items()))
        return f"{self.path.name}: {self.architecture} {self.name!r} ({types})"


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _can_dequantize(gguf: Any, qtype: Any) -> bool:
    """Whether ``gguf.dequantize`` implements ``qtype``: asked of the package itself on one zero
    block, so the answer follows the installed version."""
    import numpy as np

    block, type_bytes = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.dequantize(np.zeros((1, type_bytes), dtype=np.uint8), qtype)
    except (NotImplementedError, ValueError, TypeError, KeyError):
        return False
    return True


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Read and check the header of a GGUF file: a supported architecture, dequantisable tensors."""
    gguf = _gguf_module()
    path = resolve_gguf(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct.error/OSError on damaged files
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}).") from None
    architecture = str(_field(reader, "general.architecture") or "")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{path} holds a {architecture or 'unnamed'!r} model (general.architecture); only "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (Llama-family decoders: Llama, SmolLM2, TinyLlama, MobileLLaMA) "
            "GGUF files are supported."
        )
    types = Counter(t.tensor_type for t in reader.tensors)
    bad = sorted(t.name for t in types if not _can_dequantize(gguf, t))
    if bad:
        raise CheckpointError(
            f"{path} has tensors of GGML types {bad} that cannot be dequantised here; supported: F32, F16, BF16 and "
            "the block types the gguf package implements (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ*). "
            "Re-quantise the file with llama.cpp's llama-quantize (e.g. to Q8_0 or Q4_K_M)."
        )
    name = str(_field(reader, "general.name") or path.stem)
    return GGUFInfo(path=path, architecture=architecture, name=name, tensor_types={t.name: c for t, c in types.items()})


@contextlib.contextmanager
def _quiet_stderr():
    """transformers draws a tqdm bar while dequantising; the library never writes to the
    terminal (the CLI owns it), so the bar goes to the debug log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    if buffer.getvalue().strip():
        logger.debug("transformers (GGUF): %s", buffer.getvalue().strip()[-500:])


@dataclass(frozen=True)
class GGUFLanguageModel:
    """A loaded GGUF file: the fp32 ``LlamaForCausalLM``, its ``tokenizers.Tokenizer``, the special
    token strings the file names (``bos_token``, ``eos_token``, ``pad_token``) and the header."""

    model: Any
    tokenizer: Any
    special_tokens: dict[str, str | None]
    info: GGUFInfo


def load_gguf_language_model(path: str | Path) -> GGUFLanguageModel:
    """The language model, tokeniser and special tokens of a checked GGUF file."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    info = read_gguf_info(path)
    directory, file = str(info.path.parent), info.path.name
    with _quiet_stderr():
        hf_tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file, local_files_only=True)
        model = LlamaForCausalLM.from_pretrained(directory, gguf_file=file, local_files_only=True, dtype=torch.float32)
    tokenizer = hf_tokenizer.backend_tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    specials = {k: getattr(hf_tokenizer, k) for k in ("bos_token", "eos_token", "pad_token")}
    if specials["bos_token"] is None or specials["eos_token"] is None:
        raise CheckpointError(
            f"{info.path} names no bos/eos token (tokenizer.ggml.bos_token_id / eos_token_id); got {specials}. "
            "A prompt needs both: use a GGUF converted with its tokenizer metadata."
        )
    logger.info("loaded %s", info.summary())
    return GGUFLanguageModel(model=model.eval(), tokenizer=tokenizer, special_tokens=specials, info=info)


def _text_config(language_model: Any) -> dict[str, Any]:
    cfg = language_model.config.to_dict()
    return {k: cfg[k] for k in _LLAMA_KEYS if k in cfg and cfg[k] is not None}


def _text_len(tokenizer: Any, spec: InputSpec) -> int:
    """Room for the longest embedded digits example under this tokeniser (a BPE splits words
    differently from the word-level vocabulary), plus slack."""
    from ..core.digits import DIGIT_TASKS

    longest = 0
    for task_name in DIGIT_TASKS:
        task = DIGIT_TASKS[task_name]
        prompts = [len(tokenizer.encode(spec.prompt_template.format(question=q), add_special_tokens=False).ids) for q in task.questions]
        answers = [len(tokenizer.encode(a, add_special_tokens=False).ids) for a in task.answers()]
        longest = max(longest, max(prompts) + max(answers) + 2)
    return max(_MIN_TEXT_LEN, longest + _TEXT_SLACK)


def compose_vlm(loaded: GGUFLanguageModel, vision_tower: str = DEFAULT_VISION_TOWER, name: str = "gguf-vlm", seed: int = 0) -> MobileVLM:
    """A :class:`MobileVLM` around a loaded GGUF language model: its weights are copied in exactly;
    the vision tower and projector (``vision_tower``, a VISION_TOWERS name) are random with
    ``seed``. The input spec takes its special tokens from the file."""
    tower = VISION_TOWERS[vision_tower]
    language_model, tokenizer, specials = loaded.model, loaded.tokenizer, loaded.special_tokens
    spec = InputSpec(
        image_size=int(tower.vision["image_size"]),
        image_mean=tower.image_mean,
        image_std=tower.image_std,
        bos_token=specials["bos_token"],
        eos_token=specials["eos_token"],
        pad_token=specials["pad_token"] or specials["eos_token"],
    )
    spec.max_text_len = _text_len(tokenizer, spec)
    config = MobileVLMConfig(
        name=name,
        vision_type=tower.vision_type,
        vision=dict(tower.vision),
        text=_text_config(language_model),
        projector=tower.projector,
        input_spec=spec,
    )
    torch.manual_seed(seed)
    model = MobileVLM(config)
    missing, unexpected = model.language_model.load_state_dict(language_model.state_dict(), strict=False)
    # A tied head is one tensor under two names; transformers may list only one of them.
    missing = [k for k in missing if not (config.text.get("tie_word_embeddings") and k == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(
            f"the GGUF language model does not fit a LlamaForCausalLM built from its own config: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
    return model.eval()


def load_gguf(path: str | Path, vision_tower: str = DEFAULT_VISION_TOWER, seed: int = 0, name: str | None = None) -> tuple[MobileVLM, Any]:
    """``(MobileVLM, tokenizers.Tokenizer)``: the GGUF language model composed with a random
    ``vision_tower``. Save it with :func:`~.io.save_model`; the directory loads back with ``load_model``."""
    loaded = load_gguf_language_model(path)
    model = compose_vlm(loaded, vision_tower, name=name or f"{loaded.info.name} + {vision_tower}", seed=seed)
    return model, loaded.tokenizer


# -- writing -----------------------------------------------------------------------------------------
def _permute_rope(weight: Any, heads: int) -> Any:
    """llama.cpp's row order for q/k (``convert_hf_to_gguf.py``'s ``LlamaModel.permute``): within
    each head, the two rotary halves are interleaved. transformers' loader undoes it."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _llama_tensors(language_model: Any) -> dict[str, Any]:
    cfg = language_model.config
    state = {k: v.detach().float().cpu().numpy() for k, v in language_model.state_dict().items()}
    out = {"token_embd.weight": state["model.embed_tokens.weight"], "output_norm.weight": state["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    names = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, ours in names.items():
            weight = state[f"model.layers.{i}.{hf}.weight"]
            if ours == "attn_q":
                weight = _permute_rope(weight, cfg.num_attention_heads)
            elif ours == "attn_k":
                weight = _permute_rope(weight, cfg.num_key_value_heads)
            out[f"blk.{i}.{ours}.weight"] = weight
    return out


def write_gguf(language_model: Any, tokenizer: Any, path: str | Path, special_tokens: dict[str, str], name: str = "mobile-peft") -> Path:
    """Write an F32 GGUF of a ``LlamaForCausalLM`` and its byte-level BPE ``tokenizers.Tokenizer``,
    in llama.cpp's layout (tensor names, q/k row order, ``gpt2`` tokenizer metadata), e.g. to hand a
    merged model to llama.cpp. ``special_tokens`` names the ``bos_token``, ``eos_token`` (and
    optionally ``pad_token``) strings. Only plain Llama configs (no rope scaling, no biases)."""
    import json

    import numpy as np

    gguf = _gguf_module()
    cfg = language_model.config
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ConfigError("write_gguf writes bias-free Llama decoders only; this config has attention or MLP biases.")
    model = json.loads(tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ConfigError(f"write_gguf writes byte-level BPE tokenisers (GGUF 'gpt2'); got a {model.get('type')!r} model.")
    vocab = {**model["vocab"], **{t.content: t_id for t_id, t in tokenizer.get_added_tokens_decoder().items()}}
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ConfigError("the tokeniser's ids are not 0..n-1 without gaps; GGUF stores a dense token list.")
    special_ids = {t_id for t_id, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    types = [gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 10000.0))

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(rope))
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab[special_tokens["bos_token"]])
    writer.add_eos_token_id(vocab[special_tokens["eos_token"]])
    writer.add_pad_token_id(vocab[special_tokens.get("pad_token") or special_tokens["eos_token"]])
    writer.add_add_bos_token(False)
    for tensor_name, value in _llama_tensors(language_model).items():
        writer.add_tensor(tensor_name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
