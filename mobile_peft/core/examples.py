"""One raw visual-question-answering example: an image, a question, an answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError

__all__ = ["VQAExample"]


# eq=False: the generated __eq__/__hash__ would compare/hash the numpy image, which raises.
@dataclass(frozen=True, eq=False)
class VQAExample:
    """One (image, question, answer) triple.

    ``image`` is [H, W] grey or [H, W, 3] RGB, uint8 in 0..255 or float in 0..1
    (see :func:`~mobile_peft.core.encode.encode_image`).
    """

    image: np.ndarray
    question: str
    answer: str
    source: str = ""  # where it came from ("annotations.jsonl:12"), named in encoding errors

    def __post_init__(self) -> None:
        if not isinstance(self.image, np.ndarray):
            raise DataError(f"VQAExample.image must be a numpy array, got {type(self.image).__name__}.")
        for key in ("question", "answer"):
            value = getattr(self, key)
            if not isinstance(value, str):
                raise DataError(f"VQAExample.{key} must be a str, got {type(value).__name__} {value!r}.")
