"""Shared fixtures: the tiny preset (built once per session) and its tokeniser."""

from __future__ import annotations

import copy

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def _tiny_base():
    from mobile_peft.models import build_model

    return build_model("tiny", seed=0)


@pytest.fixture
def tiny(_tiny_base):
    """A fresh copy of the random-weight tiny model and its tokeniser."""
    model, tokenizer = _tiny_base
    return copy.deepcopy(model), tokenizer


@pytest.fixture
def tiny_batch(_tiny_base):
    """A small real batch from the digits data set, encoded for the tiny model."""
    from mobile_peft.data import VQADataset, load_digits_task

    model, tokenizer = _tiny_base
    examples = load_digits_task("digit-name", "train", limit=4)
    ds = VQADataset(examples, tokenizer, model.config.input_spec)
    return torch.utils.data.default_collate([ds[i] for i in range(len(ds))])


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny preset's word-level tokeniser."""
    from mobile_peft.data import build_word_tokenizer

    return build_word_tokenizer()


@pytest.fixture
def spec():
    """A 16-pixel input spec with the default text layout."""
    from mobile_peft.core.spec import InputSpec

    return InputSpec(image_size=16)
