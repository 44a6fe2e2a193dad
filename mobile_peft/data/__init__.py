"""Data: the input spec, tokenisers, encoding, the embedded digits tasks and user folders.

Pipeline: ``load_dataset(spec_str, split)`` -> ``list[VQAExample]`` -> ``VQADataset`` (with a
tokeniser and an :class:`InputSpec`) -> dicts of fixed-shape tensors for ``default_collate``.
"""

from ..core.datasets import ANNOTATIONS_FILE, IMAGES_DIR, load_dataset, load_folder
from ..core.digits import DIGIT_NAMES, DIGIT_TASKS, DigitTask, digit_vocabulary, load_digits_task
from ..core.examples import VQAExample
from ..core.spec import IGNORE_INDEX, InputSpec
from .encode import decode_answer, encode_image, encode_prompt, encode_text, special_token_ids
from .examples import VQADataset, example_texts
from .tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, build_word_tokenizer, load_tokenizer, save_tokenizer

__all__ = [
    "ANNOTATIONS_FILE",
    "DIGIT_NAMES",
    "DIGIT_TASKS",
    "IGNORE_INDEX",
    "IMAGES_DIR",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "DigitTask",
    "InputSpec",
    "VQADataset",
    "VQAExample",
    "build_word_tokenizer",
    "decode_answer",
    "digit_vocabulary",
    "encode_image",
    "encode_prompt",
    "encode_text",
    "example_texts",
    "load_dataset",
    "load_digits_task",
    "load_folder",
    "load_tokenizer",
    "save_tokenizer",
    "special_token_ids",
]
