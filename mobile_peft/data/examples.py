"""The torch ``Dataset`` that encodes raw VQA examples (:class:`~mobile_peft.core.VQAExample`) once.

Items are dicts of fixed-shape tensors, so ``torch.utils.data.default_collate`` stacks a batch::

    pixel_values [B, 3, S, S] float32   input_ids [B, max_text_len] int64   labels [B, max_text_len] int64
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from ..core.errors import ConfigError
from ..core.examples import VQAExample
from ..core.spec import InputSpec
from .encode import encode_image, encode_text

__all__ = ["VQADataset", "example_texts"]


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
        self._text = [encode_text(tokenizer, spec, ex.question, ex.answer, ex.source) for ex in self.examples]
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

    def split_tail(self, n: int) -> tuple[VQADataset, VQADataset]:
        """``(all but the last n examples, the last n)``: a validation cut of a training split that
        shares this dataset's encodings (the eval split stays untouched for the table)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < len(self):
            raise ConfigError(
                f"validation cut of {n!r} examples from a training split of {len(self)}; expected 1..{len(self) - 1} "
                "(pass a smaller --validation)."
            )
        cut = len(self) - n
        return self._subset(range(cut)), self._subset(range(cut, len(self)))

    def _subset(self, indices: range) -> VQADataset:
        part = object.__new__(VQADataset)
        part.examples = [self.examples[i] for i in indices]
        part.spec, part.cache_images = self.spec, self.cache_images
        part._text = [self._text[i] for i in indices]
        part._pixels = {j: self._pixels[i] for j, i in enumerate(indices) if i in self._pixels}
        return part
