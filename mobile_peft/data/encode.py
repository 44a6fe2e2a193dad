"""Turn one image and one (question, answer) pair into the fixed-shape tensors of the spec.

The text layout is the one documented in :mod:`.spec`::

    input_ids: <bos> tok(prompt_template.format(question=q)) tok(answer) <eos> <pad> ... (max_text_len)
    labels:    -100  -100 ...                                 tok(answer) <eos> -100  ...

Every step is plain tensor arithmetic (bilinear resize without antialiasing, per-channel
normalisation, right padding) so a phone can reproduce it exactly from the exported InputSpec.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ..errors import DataError
from .spec import IGNORE_INDEX, InputSpec

__all__ = ["decode_answer", "encode_image", "encode_prompt", "encode_text", "special_token_ids"]

_FLOAT_SLACK = 1e-3  # float images may overshoot [0, 1] by rounding, not by a different scale


def encode_image(image: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """[H, W] grey or [H, W, 3] RGB image -> normalised float32 tensor [3, S, S], S = spec.image_size.

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
    # np.array copies: the input may be read-only or negatively strided (np.rot90), which torch refuses.
    if image.dtype == np.uint8:
        x = torch.from_numpy(np.array(image, dtype=np.float32)) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        lo, hi = float(image.min()), float(image.max())
        if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK or not np.isfinite([lo, hi]).all():
            raise DataError(
                f"float image has values in [{lo:g}, {hi:g}]; expected 0..1. Scale it first "
                "(uint8 images are divided by 255 automatically)."
            )
        x = torch.from_numpy(np.array(image, dtype=np.float32)).clamp(0.0, 1.0)
    else:
        raise DataError(
            f"image dtype {image.dtype} is not supported; expected uint8 (0..255) or float (0..1)."
        )

    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # [C, H, W]
    size = spec.image_size
    if tuple(x.shape[1:]) != (size, size):
        x = F.interpolate(
            x.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False, antialias=False
        )[0]
    x = x.expand(3, -1, -1)  # grey -> RGB; no-op for RGB
    mean = torch.tensor(spec.image_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.image_std, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def special_token_ids(tokenizer: Tokenizer, spec: InputSpec) -> tuple[int, int, int]:
    """(pad, bos, eos) ids of the spec's special-token strings in ``tokenizer``."""
    ids = []
    missing = []
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
    return ids[0], ids[1], ids[2]


def _tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    if tokenizer.padding is not None or tokenizer.truncation is not None:
        raise DataError(
            "the tokeniser has padding or truncation enabled; encode_text pads and checks lengths "
            "itself. Call tokenizer.no_padding() and tokenizer.no_truncation() (load_tokenizer does)."
        )
    return tokenizer.encode(text, add_special_tokens=False).ids


def _prompt_ids(tokenizer: Tokenizer, spec: InputSpec, question: str) -> list[int]:
    if spec.lowercase:
        question = question.lower()
    return _tokens(tokenizer, spec.prompt_template.format(question=question))


def _pad(ids: list[int], length: int, value: int) -> torch.Tensor:
    return torch.tensor(ids + [value] * (length - len(ids)), dtype=torch.long)


def encode_text(
    tokenizer: Tokenizer, spec: InputSpec, question: str, answer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), both int64 [max_text_len], laid out as in the module docstring."""
    pad_id, bos_id, eos_id = special_token_ids(tokenizer, spec)
    prompt = _prompt_ids(tokenizer, spec, question)
    answer_ids = _tokens(tokenizer, answer.lower() if spec.lowercase else answer)
    if not answer_ids:
        raise DataError(
            f"answer {answer!r} (question {question!r}) encodes to no tokens; give a non-empty answer."
        )
    ids = [bos_id, *prompt, *answer_ids, eos_id]
    if len(ids) > spec.max_text_len:
        raise DataError(
            f"question {question!r} with answer {answer!r} needs {len(ids)} tokens "
            f"(1 <bos> + {len(prompt)} prompt + {len(answer_ids)} answer + 1 <eos>) but "
            f"max_text_len={spec.max_text_len}; set InputSpec(max_text_len={len(ids)}) or larger, "
            "or shorten the question, answer or prompt_template."
        )
    labels = [IGNORE_INDEX] * (1 + len(prompt)) + answer_ids + [eos_id]
    return _pad(ids, spec.max_text_len, pad_id), _pad(labels, spec.max_text_len, IGNORE_INDEX)


def encode_prompt(tokenizer: Tokenizer, spec: InputSpec, question: str) -> tuple[torch.Tensor, int]:
    """(input_ids int64 [max_text_len], length) for inference: ``<bos> prompt`` then padding.

    The first answer token is predicted from the logits at text position ``length - 1``; generate
    by writing each new token at position ``length`` and increasing it (fixed shapes throughout).
    """
    pad_id, bos_id, _ = special_token_ids(tokenizer, spec)
    ids = [bos_id, *_prompt_ids(tokenizer, spec, question)]
    if len(ids) + 2 > spec.max_text_len:  # leave room for at least one answer token and <eos>
        raise DataError(
            f"question {question!r} needs {len(ids)} prompt tokens, leaving no room for an answer in "
            f"max_text_len={spec.max_text_len}; set InputSpec(max_text_len={len(ids) + 2}) or larger."
        )
    return _pad(ids, spec.max_text_len, pad_id), len(ids)


def decode_answer(tokenizer: Tokenizer, spec: InputSpec, ids: Sequence[int] | torch.Tensor) -> str:
    """Text of generated answer ids, stopping at the first ``<eos>``; pads and specials dropped."""
    pad_id, _, eos_id = special_token_ids(tokenizer, spec)
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return tokenizer.decode([i for i in ids if i != pad_id and i != IGNORE_INDEX]).strip()
