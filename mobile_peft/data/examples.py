"""Raw VQA examples and the torch ``Dataset`` that encodes them once.

Items are dicts of fixed-shape tensors, so ``torch.utils.data.default_collate`` stacks a batch::

    pixel_values [B, 3, S, S] float32   input_ids [B, max_text_len] int64   labels [B, max_text_len] int64
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from ..errors import DataError
from .encode import encode_image, encode_text
from .spec import InputSpec

__all__ = ["VQADataset", "VQAExample", "example_texts"]


# eq=False: the generated __eq__/__hash__ would compare/hash the numpy image, which raises.
@dataclass(frozen=True, eq=False)
class VQAExample:
    """One (image, question, answer) triple.

    ``image`` is [H, W] grey or [H, W, 3] RGB, uint8 in 0..255 or float in 0..1
    (see :func:`~mobile_peft.data.encode.encode_image`).
    """

    image: np.ndarray
    question: str
    answer: str

    def __post_init__(self) -> None:
        if not isinstance(self.image, np.ndarray):
            raise DataError(f"VQAExample.image must be a numpy array, got {type(self.image).__name__}.")
        for key in ("question", "answer"):
            value = getattr(self, key)
            if not isinstance(value, str):
                raise DataError(f"VQAExample.{key} must be a str, got {type(value).__name__} {value!r}.")


def example_texts(examples: Iterable[VQAExample]) -> list[str]:
    """Questions and answers of ``examples``, e.g. to extend the tiny tokeniser's vocabulary."""
    return [text for ex in examples for text in (ex.question, ex.answer)]


class VQADataset(Dataset):
    """Encodes ``examples`` with ``tokenizer`` and ``spec``.

    Text is encoded eagerly, so a too-long example fails at construction, not mid-training.
    Images are encoded on first access and cached (``cache_images=False`` re-encodes each time,
    for large image sizes where the cache would not fit in memory).
    """

    def __init__(
        self,
        examples: Sequence[VQAExample],
        tokenizer: Tokenizer,
        spec: InputSpec,
        cache_images: bool = True,
    ) -> None:
        self.examples = list(examples)
        self.spec = spec
        self.cache_images = cache_images
        self._text = [encode_text(tokenizer, spec, ex.question, ex.answer) for ex in self.examples]
        self._pixels: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = self._pixels.get(index)
        if pixels is None:
            pixels = encode_image(self.examples[index].image, self.spec)
            if self.cache_images:
                self._pixels[index] = pixels
        input_ids, labels = self._text[index]
        return {"pixel_values": pixels, "input_ids": input_ids, "labels": labels}
