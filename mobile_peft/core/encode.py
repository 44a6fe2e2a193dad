"""Turn one image and one (question, answer) pair into the fixed-shape arrays of the spec, in numpy.

This is what a phone does with one example, and what the authoring layer's torch datasets wrap
(``torch.from_numpy``)::

    image  [H, W] grey | [H, W, 3] RGB, uint8 0..255 or float 0..1
        -> bilinear resize to [S, S] (align_corners=False, no antialias) -> grey to 3 channels
        -> (x - image_mean) / image_std                                    pixel_values [3, S, S] f32
    text   input_ids: <bos> tok(prompt_template.format(question=q)) tok(answer) <eos> <pad>...  [T] i64
           labels:    -100 ...                                     tok(answer) <eos> -100 ...   [T] i64

The resize reproduces PyTorch's ``F.interpolate(mode="bilinear", align_corners=False,
antialias=False)`` in float32 (the tests compare both). A tokeniser is anything with
``encode(text, add_special_tokens=False).ids``, ``token_to_id`` and ``decode`` (a Hugging Face
``tokenizers.Tokenizer``): the core does not import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .errors import DataError
from .examples import VQAExample
from .spec import BundleInputSpec, InputSpec, TokenIds

__all__ = [
    "Encoder",
    "bilinear_resize",
    "decode_answer",
    "encode_image",
    "encode_prompt",
    "encode_text",
    "special_token_ids",
]

_FLOAT_SLACK = 1e-3  # float images may overshoot [0, 1] by rounding, not by a different scale


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> Any: ...

    def token_to_id(self, token: str) -> int | None: ...

    def decode(self, ids: list[int]) -> str: ...


# -- image -----------------------------------------------------------------------------------------
def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right source indices and the right weight for each output position, as PyTorch's
    ``area_pixel_compute_source_index`` (align_corners=False): ``src = (i + 0.5) * in/out - 0.5``,
    clamped at 0, computed in float32 like its CPU kernel."""
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)


def bilinear_resize(x: np.ndarray, size: int) -> np.ndarray:
    """``[C, H, W]`` float32 -> ``[C, size, size]``, as ``F.interpolate(mode="bilinear",
    align_corners=False, antialias=False)``."""
    _, h, w = x.shape
    y0, y1, wy = _source_index(size, h)
    x0, x1, wx = _source_index(size, w)
    one = np.float32(1)
    top = x[:, y0, :] * (one - wy)[None, :, None] + x[:, y1, :] * wy[None, :, None]
    return (top[:, :, x0] * (one - wx)[None, None, :] + top[:, :, x1] * wx[None, None, :]).astype(np.float32)


def encode_image(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """[H, W] grey or [H, W, 3] RGB image -> normalised float32 ``[3, S, S]``, S = spec.image_size.

    uint8 images are read as 0..255, float images as 0..1. The image is resized (up or down,
    aspect ratio not kept) with bilinear interpolation, ``align_corners=False``, no antialiasing;
    grey is replicated to three channels; then ``(x - image_mean) / image_std`` per channel.
    """
    if not isinstance(image, np.ndarray):
        raise DataError(f"image must be a numpy array, got {type(image).__name__}.")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)) or 0 in image.shape:
        raise DataError(
            f"image has shape {image.shape}; expected [H, W] (grey) or [H, W, 3] (RGB). "
            "Convert RGBA or palette images to RGB first (PIL: image.convert('RGB'))."
        )
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(image.dtype, np.floating):
        lo, hi = float(image.min()), float(image.max())
        if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK or not np.isfinite([lo, hi]).all():
            raise DataError(
                f"float image has values in [{lo:g}, {hi:g}]; expected 0..1. Scale it first "
                "(uint8 images are divided by 255 automatically)."
            )
        x = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise DataError(
            f"image dtype {image.dtype} is not supported; expected uint8 (0..255) or float (0..1)."
        )
    x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))  # [C, H, W]
    size = spec.image_size
    if x.shape[1:] != (size, size):
        x = bilinear_resize(x, size)
    x = np.broadcast_to(x, (3, size, size))  # grey -> RGB; no-op for RGB
    mean = np.asarray(spec.image_mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.image_std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


# -- text ------------------------------------------------------------------------------------------
def special_token_ids(tokenizer: Tokenizer, spec: InputSpec) -> TokenIds:
    """The (pad, bos, eos) ids of the spec's special-token strings in ``tokenizer``."""
    ids, missing = [], []
    for field_name in ("pad_token", "bos_token", "eos_token"):
        token = getattr(spec, field_name)
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            missing.append(f"{field_name}={token!r}")
        ids.append(token_id)
    if missing:
        raise DataError(
            f"the tokeniser has no token for {', '.join(missing)}; set InputSpec(pad_token=..., "
            "bos_token=..., eos_token=...) to strings in its vocabulary (e.g. '<|endoftext|>', '</s>')."
        )
    return TokenIds(ids[0], ids[1], ids[2])


def _tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    if getattr(tokenizer, "padding", None) is not None or getattr(tokenizer, "truncation", None) is not None:
        raise DataError(
            "the tokeniser has padding or truncation enabled; encode_text pads and checks lengths "
            "itself. Call tokenizer.no_padding() and tokenizer.no_truncation() (load_tokenizer does)."
        )
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


def _prompt_ids(tokenizer: Tokenizer, spec: InputSpec, question: str) -> list[int]:
    if spec.lowercase:
        question = question.lower()
    return _tokens(tokenizer, spec.prompt_template.format(question=question))


def _pad(ids: list[int], length: int, value: int) -> np.ndarray:
    return np.asarray(ids + [value] * (length - len(ids)), dtype=np.int64)


def encode_text(
    tokenizer: Tokenizer, spec: InputSpec, ids: TokenIds, question: str, answer: str, source: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, labels)``, both int64 ``[max_text_len]``, laid out as in the module docstring.
    ``source`` (``"file:line"``) is named in the errors."""
    where = f"{source}: " if source else ""
    prompt = _prompt_ids(tokenizer, spec, question)
    answer_ids = _tokens(tokenizer, answer.lower() if spec.lowercase else answer)
    if not answer_ids:
        raise DataError(
            f"{where}answer {answer!r} (question {question!r}) encodes to no tokens; give a non-empty answer."
        )
    seq = [ids.bos, *prompt, *answer_ids, ids.eos]
    if len(seq) > spec.max_text_len:
        raise DataError(
            f"{where}question {question!r} with answer {answer!r} needs {len(seq)} tokens "
            f"(1 <bos> + {len(prompt)} prompt + {len(answer_ids)} answer + 1 <eos>) but "
            f"max_text_len={spec.max_text_len}; shorten the question, answer or prompt_template, or set "
            f"InputSpec(max_text_len={len(seq)}) or larger (a bundle's length is fixed at export)."
        )
    labels = [ids.ignore_index] * (1 + len(prompt)) + answer_ids + [ids.eos]
    return _pad(seq, spec.max_text_len, ids.pad), _pad(labels, spec.max_text_len, ids.ignore_index)


def encode_prompt(
    tokenizer: Tokenizer, spec: InputSpec, ids: TokenIds, question: str
) -> tuple[np.ndarray, int]:
    """``(input_ids int64 [max_text_len], length)`` for inference: ``<bos> prompt`` then padding.

    The first answer token is predicted from the logits at text position ``length - 1``; generate
    by writing each new token at position ``length`` and increasing it (fixed shapes throughout).
    """
    seq = [ids.bos, *_prompt_ids(tokenizer, spec, question)]
    if len(seq) + 2 > spec.max_text_len:  # leave room for at least one answer token and <eos>
        raise DataError(
            f"question {question!r} needs {len(seq)} prompt tokens, leaving no room for an answer in "
            f"max_text_len={spec.max_text_len}; set InputSpec(max_text_len={len(seq) + 2}) or larger."
        )
    return _pad(seq, spec.max_text_len, ids.pad), len(seq)


def decode_answer(tokenizer: Tokenizer, ids: TokenIds, token_ids: Sequence[int]) -> str:
    """Text of generated answer ids, stopping at the first ``<eos>``; pads and specials dropped."""
    seq = [int(i) for i in token_ids]
    if ids.eos in seq:
        seq = seq[: seq.index(ids.eos)]
    return tokenizer.decode([i for i in seq if i not in (ids.pad, ids.ignore_index)]).strip()


class Encoder:
    """Builds a bundle's batches: its ``input_spec`` and its tokeniser."""

    def __init__(self, inputs: BundleInputSpec, tokenizer: Tokenizer) -> None:
        self.inputs = inputs
        self.spec = inputs.spec
        self.ids = inputs.token_ids
        self.tokenizer = tokenizer
        self.batch_size = inputs.batch_size

    def text(self, question: str, answer: str, source: str = "") -> tuple[np.ndarray, np.ndarray]:
        return encode_text(self.tokenizer, self.spec, self.ids, question, answer, source)

    def image(self, image: np.ndarray) -> np.ndarray:
        return encode_image(image, self.spec)

    def example(self, example: VQAExample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.image(example.image), *self.text(example.question, example.answer, example.source))

    def batch(self, examples: Sequence[VQAExample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``pixel_values [B, 3, S, S] f32, input_ids [B, T] i64, labels [B, T] i64``."""
        rows = [self.example(e) for e in examples]
        return tuple(np.stack([r[k] for r in rows]) for k in range(3))  # type: ignore[return-value]
