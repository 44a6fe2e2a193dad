"""The ``tiny`` preset's word-level tokeniser, and loading/saving any ``tokenizer.json``.

Real checkpoints bring their own ``tokenizer.json``; every function in :mod:`.encode` works with
any file in the Hugging Face ``tokenizers`` format, looking the special tokens up by the strings
named in the :class:`~mobile_peft.core.spec.InputSpec`.

The tiny vocabulary is built, not learned: the special tokens in fixed ids, then every word the
embedded digits tasks and the default prompt template can produce, plus caller-supplied words,
sorted so that the same inputs always give the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from ..core.contract import TOKENIZER_FILE
from ..core.digits import digit_vocabulary
from ..core.errors import CheckpointError, DataError
from ..core.spec import InputSpec

__all__ = [
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "UNK_TOKEN",
    "build_word_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
]

UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"
# Fixed ids: 0 pad, 1 bos, 2 eos, 3 unk, 4 image. Phones and tests rely on these positions.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", UNK_TOKEN, IMAGE_TOKEN)


def _default_prompt_template() -> str:
    return next(f.default for f in fields(InputSpec) if f.name == "prompt_template")


def _make_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    # Whitespace keeps runs of punctuation together ("?!"); Punctuation then isolates each mark,
    # so "shown?" and "shown ?" give the same tokens.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    return tok


def build_word_tokenizer(words: Iterable[str] = ()) -> Tokenizer:
    """A lower-casing word-level tokeniser covering the digits tasks, the default prompt and ``words``.

    ``words`` may be whole sentences (e.g. the questions and answers of a user data set); they are
    split with the tokeniser's own normaliser and pre-tokeniser. Words not in the vocabulary
    encode as ``<unk>`` (id 3).
    """
    splitter = _make_tokenizer({tok: i for i, tok in enumerate(SPECIAL_TOKENS)})
    texts = [*digit_vocabulary(), _default_prompt_template().replace("{question}", " "), *words]
    found: set[str] = set()
    for text in texts:
        normalised = splitter.normalizer.normalize_str(text)
        found.update(piece for piece, _ in splitter.pre_tokenizer.pre_tokenize_str(normalised))
    ordinary = sorted(found - set(SPECIAL_TOKENS))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *ordinary])}
    tok = _make_tokenizer(vocab)
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # already in vocab: keeps ids, never split
    return tok


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write ``directory/tokenizer.json`` (creating ``directory``) and return its path."""
    path = Path(directory) / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokeniser from a ``tokenizer.json`` file or a directory containing one.

    Padding and truncation stored in the file are switched off: :func:`~.encode.encode_text`
    pads and checks lengths itself, and silent truncation would cut answers.
    """
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(
            f"no tokeniser at {file}; expected a Hugging Face tokenizers-format '{TOKENIZER_FILE}' "
            "(or a directory containing one). Save one with save_tokenizer(tok, directory)."
        )
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust side raises plain Exception subclasses
        raise DataError(
            f"{file} is not a valid tokenizers-format file ({exc}); expected a '{TOKENIZER_FILE}' "
            "written by tokenizers.Tokenizer.save or save_tokenizer."
        ) from exc
    tok.no_padding()
    tok.no_truncation()
    return tok
