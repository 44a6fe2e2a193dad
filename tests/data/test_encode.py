import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from mobile_peft.core.errors import DataError
from mobile_peft.data import (
    IGNORE_INDEX,
    InputSpec,
    decode_answer,
    encode_image,
    encode_prompt,
    encode_text,
    special_token_ids,
)

X = IGNORE_INDEX

# A hand-made "real checkpoint" tokeniser: different special strings, no lower-casing normaliser.
VOCAB = {
    "[PAD]": 0, "<s>": 1, "</s>": 2, "[UNK]": 3, "question": 4, ":": 5, "answer": 6,
    "what": 7, "is": 8, "it": 9, "?": 10, "cat": 11, "black": 12,
}  # fmt: skip


@pytest.fixture
def hand_tokenizer() -> Tokenizer:
    tok = Tokenizer(WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@pytest.fixture
def hand_spec() -> InputSpec:
    return InputSpec(image_size=8, max_text_len=16, pad_token="[PAD]", bos_token="<s>", eos_token="</s>")


def test_layout_and_label_mask_hand_written(hand_tokenizer, hand_spec):
    ids, labels = encode_text(hand_tokenizer, hand_spec, "What is it?", "Black cat")
    # <s> question : what is it ? answer : black cat </s> [PAD] x4
    assert ids.tolist() == [1, 4, 5, 7, 8, 9, 10, 6, 5, 12, 11, 2, 0, 0, 0, 0]
    assert labels.tolist() == [X, X, X, X, X, X, X, X, X, 12, 11, 2, X, X, X, X]
    assert ids.dtype == labels.dtype == torch.long
    assert ids.shape == labels.shape == (16,)


def test_lowercase_flag(hand_tokenizer, hand_spec):
    hand_spec.lowercase = False
    ids, labels = encode_text(hand_tokenizer, hand_spec, "What is it?", "cat")
    assert ids[3].item() == 3  # "What" is unknown to a case-sensitive vocabulary
    assert labels[9:11].tolist() == [11, 2]


def test_layout_with_tiny_tokenizer(tiny_tokenizer, spec):
    ids, labels = encode_text(tiny_tokenizer, spec, "What digit is shown?", "Seven")
    t = tiny_tokenizer.token_to_id
    words = ["question", ":", "what", "digit", "is", "shown", "?", "answer", ":"]
    expected = [1, *map(t, words), t("seven"), 2]
    assert ids.tolist() == expected + [0] * (24 - len(expected))
    assert labels.tolist() == [X] * 10 + [t("seven"), 2] + [X] * 12


def test_exact_fit_has_no_padding(hand_tokenizer, hand_spec):
    hand_spec.max_text_len = 12
    ids, labels = encode_text(hand_tokenizer, hand_spec, "what is it ?", "black cat")
    assert ids[-1].item() == 2 and labels[-1].item() == 2


def test_too_long_names_lengths_and_fix(hand_tokenizer, hand_spec):
    hand_spec.max_text_len = 11
    with pytest.raises(DataError, match=r"needs 12 tokens .*max_text_len=11.*max_text_len=12"):
        encode_text(hand_tokenizer, hand_spec, "what is it ?", "black cat")


def test_missing_special_token_suggests_spec(hand_tokenizer):
    spec = InputSpec(image_size=8)  # <pad>/<bos>/<eos> are not in VOCAB
    with pytest.raises(DataError, match="InputSpec") as info:
        encode_text(hand_tokenizer, spec, "what", "cat")
    assert "pad_token='<pad>'" in str(info.value) and "eos_token='<eos>'" in str(info.value)


def test_empty_answer_rejected(tiny_tokenizer, spec):
    with pytest.raises(DataError, match="no tokens"):
        encode_text(tiny_tokenizer, spec, "what digit is shown ?", "  ")


def test_padding_enabled_tokenizer_rejected(hand_spec):
    tok = Tokenizer(WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.enable_padding(length=30)
    with pytest.raises(DataError, match="no_padding"):
        encode_text(tok, hand_spec, "what", "cat")


def test_special_token_ids(hand_tokenizer, hand_spec):
    assert special_token_ids(hand_tokenizer, hand_spec) == (0, 1, 2)


def test_encode_prompt_is_prefix_of_training_ids(tiny_tokenizer, spec):
    ids, _ = encode_text(tiny_tokenizer, spec, "what digit is shown ?", "seven")
    prompt, n = encode_prompt(tiny_tokenizer, spec, "what digit is shown ?")
    assert n == 10 and prompt.shape == (24,)
    assert prompt[:n].tolist() == ids[:n].tolist()
    assert prompt[n:].tolist() == [0] * (24 - n)


def test_decode_answer_stops_at_eos(tiny_tokenizer, spec):
    _, labels = encode_text(tiny_tokenizer, spec, "is this digit even or odd ?", "odd")
    answer_ids = labels[labels != X]
    assert decode_answer(tiny_tokenizer, spec, answer_ids) == "odd"
    assert decode_answer(tiny_tokenizer, spec, [*answer_ids.tolist(), 13, 14]) == "odd"


# ---- images -------------------------------------------------------------------------------


def _bounds(spec):
    mean, std = torch.tensor(spec.image_mean), torch.tensor(spec.image_std)
    return ((0 - mean) / std).view(3, 1, 1), ((1 - mean) / std).view(3, 1, 1)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3), (5, 11), (40, 30, 3), (16, 16), (8, 8, 1)])
def test_image_shape_dtype_and_range(spec, shape):
    rng = np.random.default_rng(0)
    image = rng.random(shape)
    out = encode_image(image, spec)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    lo, hi = _bounds(spec)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()


def test_constant_images_normalise_to_known_values(spec):
    lo, hi = _bounds(spec)
    assert torch.allclose(encode_image(np.zeros((8, 8)), spec), lo.expand(3, 16, 16))
    assert torch.allclose(encode_image(np.full((8, 8, 3), 255, np.uint8), spec), hi.expand(3, 16, 16))


def test_grey_equals_rgb_with_equal_channels(spec):
    grey = np.random.default_rng(1).random((8, 8)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert torch.allclose(encode_image(grey, spec), encode_image(rgb, spec))


def test_uint8_equals_float(spec):
    u8 = np.random.default_rng(2).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    assert torch.allclose(encode_image(u8, spec), encode_image(u8 / 255.0, spec), atol=1e-6)


def test_matches_reference_bilinear_resize(spec):
    image = np.random.default_rng(3).random((32, 32, 3)).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=(16, 16), mode="bilinear", align_corners=False
    )[0]
    mean, std = torch.tensor(spec.image_mean).view(3, 1, 1), torch.tensor(spec.image_std).view(3, 1, 1)
    assert torch.allclose(encode_image(image, spec), (ref - mean) / std, atol=1e-6)


def test_read_only_and_strided_input(spec):
    image = np.rot90(np.random.default_rng(4).random((8, 8)))
    image.setflags(write=False)
    assert encode_image(image, spec).shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 8, 4)), "expected \\[H, W\\]"),
        (np.zeros((2, 8, 8, 3)), "expected \\[H, W\\]"),
        (np.full((8, 8), 16.0), "expected 0..1"),
        (np.zeros((8, 8), np.int64), "dtype int64"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_images(spec, image, match):
    with pytest.raises(DataError, match=match):
        encode_image(image, spec)
