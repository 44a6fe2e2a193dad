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


# -- a tiny Llama GGUF (llama.cpp layout, F32) and the model it came from ---------------------------
GGUF_SPECIALS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}


def _tiny_bpe():
    """A byte-level BPE (GGUF 'gpt2') trained on the digits tasks' words and prompt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mobile_peft.core.digits import digit_vocabulary

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(GGUF_SPECIALS.values()), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    words = sorted(digit_vocabulary()) + ["question : answer :"]
    tok.train_from_iterator(words * 4, trainer=trainer)
    return tok


def _tiny_llama(vocab: int, tied: bool, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1 so a swapped tensor would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _write_tiny_gguf(path, tied: bool = True, seed: int = 0):
    from mobile_peft.models.gguf import write_gguf

    tok = _tiny_bpe()
    model = _tiny_llama(tok.get_vocab_size(), tied, seed)
    write_gguf(model, tok, path, GGUF_SPECIALS, name="tiny-test")
    return model, tok


@pytest.fixture
def write_tiny_gguf():
    """``write(path, tied=True, seed=0) -> (LlamaForCausalLM, tokenizers.Tokenizer)``: writes a
    2-layer Llama with a byte-level BPE over the digits vocabulary as GGUF at ``path``."""
    return _write_tiny_gguf
