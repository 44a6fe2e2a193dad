import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from mobile_peft.core.errors import DataError
from mobile_peft.data import InputSpec, VQADataset, VQAExample, example_texts, load_digits_task


def test_items_and_default_collate(tiny_tokenizer, spec):
    ds = VQADataset(load_digits_task("parity", "eval", limit=10), tiny_tokenizer, spec)
    assert len(ds) == 10
    item = ds[0]
    assert set(item) == {"pixel_values", "input_ids", "labels"}
    batch = default_collate([ds[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 24)
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
    sizes = [b["input_ids"].shape[0] for b in DataLoader(ds, batch_size=4)]
    assert sizes == [4, 4, 2]


def test_images_are_cached(tiny_tokenizer, spec):
    examples = load_digits_task("digit-name", "eval", limit=2)
    ds = VQADataset(examples, tiny_tokenizer, spec)
    assert ds[1]["pixel_values"] is ds[1]["pixel_values"]
    uncached = VQADataset(examples, tiny_tokenizer, spec, cache_images=False)
    assert uncached[1]["pixel_values"] is not uncached[1]["pixel_values"]
    assert torch.equal(uncached[1]["pixel_values"], ds[1]["pixel_values"])


def test_too_long_fails_at_construction(tiny_tokenizer):
    spec = InputSpec(image_size=8, max_text_len=8)
    with pytest.raises(DataError, match="max_text_len"):
        VQADataset(load_digits_task("digit-name", "eval", limit=3), tiny_tokenizer, spec)


def test_example_is_frozen_and_validated():
    ex = VQAExample(np.zeros((2, 2)), "q", "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.answer = "b"  # type: ignore[misc]
    with pytest.raises(DataError, match="answer must be a str"):
        VQAExample(np.zeros((2, 2)), "q", 3)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="numpy array"):
        VQAExample([[0]], "q", "a")  # type: ignore[arg-type]
    assert {ex} and ex == ex  # hashable, identity equality


def test_example_texts():
    exs = [VQAExample(np.zeros((2, 2)), "is it a cat ?", "yes"), VQAExample(np.zeros((2, 2)), "q2", "no")]
    assert example_texts(exs) == ["is it a cat ?", "yes", "q2", "no"]
