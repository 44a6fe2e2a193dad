import pytest
from tokenizers import Tokenizer

from mobile_peft.core.errors import CheckpointError, DataError
from mobile_peft.data import (
    DIGIT_TASKS,
    SPECIAL_TOKENS,
    build_word_tokenizer,
    digit_vocabulary,
    load_tokenizer,
    save_tokenizer,
)


def test_special_tokens_have_fixed_ids(tiny_tokenizer):
    assert SPECIAL_TOKENS == ("<pad>", "<bos>", "<eos>", "<unk>", "<image>")
    assert [tiny_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]


def test_specials_are_not_split_and_text_is_lowercased(tiny_tokenizer):
    assert tiny_tokenizer.encode("<image> WHAT digit", add_special_tokens=False).ids[0] == 4
    assert tiny_tokenizer.encode("WHAT", add_special_tokens=False).tokens == ["what"]
    # "shown?" and "shown ?" split the same way
    a = tiny_tokenizer.encode("shown?", add_special_tokens=False).ids
    assert a == tiny_tokenizer.encode("shown ?", add_special_tokens=False).ids and len(a) == 2


def test_vocabulary_covers_digits_tasks_and_default_prompt(tiny_tokenizer):
    vocab = tiny_tokenizer.get_vocab()
    assert digit_vocabulary() <= set(vocab)
    assert {"question", ":", "answer"} <= set(vocab)
    for name in DIGIT_TASKS:
        task = DIGIT_TASKS[name]
        for text in (*task.questions, *task.answers()):
            assert 3 not in tiny_tokenizer.encode(text, add_special_tokens=False).ids, text


def test_unknown_word_is_unk(tiny_tokenizer):
    assert tiny_tokenizer.encode("zebra", add_special_tokens=False).ids == [3]


def test_extra_words_and_sentences_are_added():
    tok = build_word_tokenizer(["Zebra", "is it a cat?"])
    assert tok.token_to_id("zebra") is not None and tok.token_to_id("cat") is not None
    assert tok.token_to_id("Zebra") is None  # normalised before entering the vocabulary
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert 3 not in tok.encode("is it a Zebra ?", add_special_tokens=False).ids


def test_build_is_deterministic():
    words = ["b", "a", "c"]
    assert build_word_tokenizer(words).to_str() == build_word_tokenizer(reversed(words)).to_str()
    vocab = build_word_tokenizer().get_vocab()
    ordinary = sorted((i, t) for t, i in vocab.items() if i >= len(SPECIAL_TOKENS))
    assert [t for _, t in ordinary] == sorted(t for _, t in ordinary)


def test_save_load_round_trip(tmp_path, tiny_tokenizer):
    path = save_tokenizer(tiny_tokenizer, tmp_path / "model")
    assert path == tmp_path / "model" / "tokenizer.json" and path.is_file()
    for source in (tmp_path / "model", path, str(path)):
        loaded = load_tokenizer(source)
        assert loaded.get_vocab() == tiny_tokenizer.get_vocab()
        text = "<image> what digit is shown ? zebra seven"
        assert loaded.encode(text).ids == tiny_tokenizer.encode(text).ids


def test_load_switches_off_padding_and_truncation(tmp_path):
    tok = build_word_tokenizer()
    tok.enable_truncation(3)
    tok.enable_padding(length=10)
    loaded = load_tokenizer(save_tokenizer(tok, tmp_path))
    assert loaded.padding is None and loaded.truncation is None


def test_load_missing_names_path(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.json") as info:
        load_tokenizer(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_tokenizer(tmp_path)  # directory without tokenizer.json


def test_load_malformed(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizers-format"):
        load_tokenizer(tmp_path)


def test_returns_tokenizers_tokenizer(tiny_tokenizer):
    assert isinstance(tiny_tokenizer, Tokenizer)
