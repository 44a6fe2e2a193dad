import pytest
from tokenizers import Tokenizer

from mobile_peft.data import InputSpec, build_word_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Tokenizer:
    return build_word_tokenizer()


@pytest.fixture
def spec() -> InputSpec:
    return InputSpec(image_size=16)
