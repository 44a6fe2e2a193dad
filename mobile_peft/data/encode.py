"""The core's numpy encoding (:mod:`mobile_peft.core.encode`) as torch tensors for eager training.

Same layout, same numbers: every function here is the core's function plus ``torch.from_numpy``,
so the authoring side and a phone build exactly the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from ..core import encode as _core
from ..core.spec import InputSpec

__all__ = ["decode_answer", "encode_image", "encode_prompt", "encode_text", "special_token_ids"]


def special_token_ids(tokenizer: Tokenizer, spec: InputSpec) -> tuple[int, int, int]:
    """(pad, bos, eos) ids of the spec's special-token strings in ``tokenizer``."""
    ids = _core.special_token_ids(tokenizer, spec)
    return ids.pad, ids.bos, ids.eos


def encode_image(image: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """[H, W] grey or [H, W, 3] RGB image -> normalised float32 tensor [3, S, S] (see the core)."""
    return torch.from_numpy(_core.encode_image(image, spec))


def encode_text(tokenizer: Tokenizer, spec: InputSpec, question: str, answer: str, source: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), both int64 [max_text_len]; ``source`` ("file:line") is named in errors."""
    ids, labels = _core.encode_text(tokenizer, spec, _core.special_token_ids(tokenizer, spec), question, answer, source)
    return torch.from_numpy(ids), torch.from_numpy(labels)


def encode_prompt(tokenizer: Tokenizer, spec: InputSpec, question: str) -> tuple[torch.Tensor, int]:
    """(input_ids int64 [max_text_len], length) for inference: ``<bos> prompt`` then padding."""
    ids, length = _core.encode_prompt(tokenizer, spec, _core.special_token_ids(tokenizer, spec), question)
    return torch.from_numpy(ids), length


def decode_answer(tokenizer: Tokenizer, spec: InputSpec, ids: Sequence[int] | torch.Tensor) -> str:
    """Text of generated answer ids, stopping at the first ``<eos>``; pads and specials dropped."""
    seq = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    return _core.decode_answer(tokenizer, _core.special_token_ids(tokenizer, spec), seq)
