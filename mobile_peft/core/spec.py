"""How raw (image, question, answer) triples become model inputs: :class:`InputSpec`, and the
bundle's :class:`BundleInputSpec` (the spec plus what export fixes: batch size, sequence length,
special token ids, tokeniser file).

The :class:`InputSpec` is owned by the model (saved in its ``config.json``) and travels into the
export manifest, so a phone builds exactly the same tensors as the SDK.

Sequence layout (fixed, no data-dependent placement)::

    [ image tokens (n_image_tokens) | <bos> prompt-with-question answer <eos> <pad> ... ]
                                      <------------- max_text_len ------------------->

Text is right-padded; with a causal mask, padding that comes after the real tokens cannot
change them, so no padding mask is needed. ``labels`` is -100 everywhere except the answer
tokens and the closing ``<eos>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

from .contract import IGNORE_INDEX, InputSpecKey, TokenIdKey
from .errors import ConfigError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IGNORE_INDEX",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "BundleInputSpec",
    "InputSpec",
    "TokenIds",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass
class InputSpec:
    """Everything needed to turn an example into tensors, and nothing model-internal."""

    image_size: int = field(metadata={"help": "Square side in pixels the vision tower expects."})
    image_mean: tuple[float, float, float] = field(default=CLIP_MEAN, metadata={"help": "Per-channel mean."})
    image_std: tuple[float, float, float] = field(default=CLIP_STD, metadata={"help": "Per-channel std."})
    prompt_template: str = field(
        default="question : {question} answer :",
        metadata={"help": "Text before the answer; must contain '{question}'."},
    )
    max_text_len: int = field(default=24, metadata={"help": "Text tokens per example, after padding."})
    pad_token: str = "<pad>"
    bos_token: str = "<bos>"
    eos_token: str = "<eos>"
    lowercase: bool = field(default=True, metadata={"help": "Lower-case questions and answers."})

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in self.image_std)  # type: ignore[assignment]
        if "{question}" not in self.prompt_template:
            raise ConfigError(
                f"prompt_template={self.prompt_template!r} has no '{{question}}' placeholder; add one."
            )
        if self.image_size <= 0 or self.max_text_len <= 2:
            raise ConfigError(
                f"image_size={self.image_size} and max_text_len={self.max_text_len} must be positive "
                "(max_text_len > 2 leaves room for <bos> and <eos>)."
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ConfigError("image_mean and image_std need 3 values (RGB).")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """From a dict holding at least the fields without defaults; keys that are not fields
        (a manifest's ``batch_size``, ...) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class TokenIds:
    pad: int
    bos: int
    eos: int
    ignore_index: int = IGNORE_INDEX

    def to_dict(self) -> dict[str, int]:
        return {
            TokenIdKey.PAD: self.pad,
            TokenIdKey.BOS: self.bos,
            TokenIdKey.EOS: self.eos,
            TokenIdKey.IGNORE_INDEX: self.ignore_index,
        }


@dataclass(frozen=True)
class BundleInputSpec:
    """A manifest's ``input_spec``: the model's spec and what the export fixed."""

    spec: InputSpec
    batch_size: int
    sequence_length: int
    token_ids: TokenIds
    tokenizer_file: str

    def to_dict(self) -> dict[str, Any]:
        K = InputSpecKey
        return {
            **self.spec.to_dict(),
            K.SEQUENCE_LENGTH: self.sequence_length,
            K.BATCH_SIZE: self.batch_size,
            K.TOKEN_IDS: self.token_ids.to_dict(),
            K.TOKENIZER_FILE: self.tokenizer_file,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        K, T = InputSpecKey, TokenIdKey
        ids = d[K.TOKEN_IDS]
        return cls(
            spec=InputSpec.from_dict(d),
            batch_size=int(d[K.BATCH_SIZE]),
            sequence_length=int(d[K.SEQUENCE_LENGTH]),
            token_ids=TokenIds(
                int(ids[T.PAD]), int(ids[T.BOS]), int(ids[T.EOS]), int(ids.get(T.IGNORE_INDEX, IGNORE_INDEX))
            ),
            tokenizer_file=d[K.TOKENIZER_FILE],
        )
