from collections import Counter

import numpy as np
import pytest

from mobile_peft.core.digits import _split_indices
from mobile_peft.core.errors import DataError, RegistryError
from mobile_peft.data import (
    DIGIT_NAMES,
    DIGIT_TASKS,
    IGNORE_INDEX,
    InputSpec,
    digit_vocabulary,
    encode_text,
    load_digits_task,
)

TASKS = ["digit-name", "greater-than-four", "inverted", "next-digit", "parity", "rotated", "thick"]
DOMAIN_SHIFTS = ["rotated", "thick", "inverted"]


def test_task_names():
    assert DIGIT_TASKS.names() == TASKS


def test_registry_rejects_duplicates():
    with pytest.raises(RegistryError, match="already registered"):
        DIGIT_TASKS.register("parity")(DIGIT_TASKS["parity"])


@pytest.mark.parametrize("name", TASKS)
def test_counts_and_answers_in_vocabulary(name):
    train, eval_ = load_digits_task(name, "train"), load_digits_task(name, "eval")
    assert (len(train), len(eval_)) == (1437, 360)
    task = DIGIT_TASKS[name]
    answers = {ex.answer for ex in train + eval_}
    assert answers == task.answers() and answers <= digit_vocabulary()
    questions = {ex.question for ex in train}
    assert questions == set(task.questions) and len(questions) > 1  # every paraphrase is used
    for ex in train[:5]:
        assert ex.image.shape == (8, 8) and 0.0 <= ex.image.min() and ex.image.max() <= 1.0


@pytest.mark.parametrize("name", TASKS)
def test_every_template_fits_default_max_text_len(name, tiny_tokenizer):
    spec = InputSpec(image_size=8)
    assert spec.max_text_len == 24 and spec.prompt_template == "question : {question} answer :"
    task = DIGIT_TASKS[name]
    for question in task.questions:
        for answer in task.answers():
            ids, labels = encode_text(tiny_tokenizer, spec, question, answer)  # raises if too long
            assert 3 not in ids.tolist()  # no <unk>
            assert (labels != IGNORE_INDEX).sum() == 2  # one answer word + <eos>


def test_answer_functions():
    expect = {"digit-name": "seven", "parity": "odd", "next-digit": "eight", "greater-than-four": "yes"}
    for name, answer in expect.items():
        assert DIGIT_TASKS[name].answer(7) == answer
    assert DIGIT_TASKS["next-digit"].answer(9) == "zero"
    assert DIGIT_TASKS["greater-than-four"].answer(4) == "no"
    assert DIGIT_TASKS["parity"].answer(0) == "even"
    for name in DOMAIN_SHIFTS:
        assert [DIGIT_TASKS[name].answer(d) for d in range(10)] == list(DIGIT_NAMES)


def test_split_is_disjoint_stratified_and_shared():
    split = _split_indices(0, 0.2)
    train, eval_ = set(split["train"].tolist()), set(split["eval"].tolist())
    assert not train & eval_ and len(train | eval_) == 1797
    # stratified: each digit has ~36 eval images
    counts = Counter(ex.answer for ex in load_digits_task("digit-name", "eval"))
    assert len(counts) == 10 and all(35 <= c <= 38 for c in counts.values())
    # the same images, in the same order, for every task: no train image of one task is in another's eval
    base = np.stack([ex.image for ex in load_digits_task("digit-name", "train")])
    rotated_back = np.stack([np.rot90(ex.image, k=-1) for ex in load_digits_task("rotated", "train")])
    np.testing.assert_array_equal(base, rotated_back)
    inverted_back = np.stack([1.0 - ex.image for ex in load_digits_task("inverted", "train")])
    np.testing.assert_allclose(base, inverted_back, atol=1e-6)


def test_split_is_deterministic_by_seed():
    a = load_digits_task("parity", "eval", seed=3)
    b = load_digits_task("parity", "eval", seed=3)
    c = load_digits_task("parity", "eval", seed=4)
    assert [(e.question, e.answer) for e in a] == [(e.question, e.answer) for e in b]
    np.testing.assert_array_equal(np.stack([e.image for e in a]), np.stack([e.image for e in b]))
    assert not np.array_equal(np.stack([e.image for e in a]), np.stack([e.image for e in c]))


def test_limit_takes_a_prefix():
    full = load_digits_task("digit-name", "train")
    head = load_digits_task("digit-name", "train", limit=50)
    assert len(head) == 50
    assert [e.answer for e in head] == [e.answer for e in full[:50]]
    assert len(set(e.answer for e in head)) == 10  # shuffled order: a prefix still sees every class


@pytest.mark.parametrize("name", DOMAIN_SHIFTS)
def test_domain_shift_changes_images(name):
    base = np.stack([ex.image for ex in load_digits_task("digit-name", "eval")])
    shifted = np.stack([ex.image for ex in load_digits_task(name, "eval")])
    assert shifted.shape == base.shape
    assert shifted.min() >= 0.0 and shifted.max() <= 1.0
    changed = np.abs(shifted - base).reshape(len(base), -1).max(axis=1) > 0
    assert changed.all()
    assert np.abs(shifted - base).mean() > 0.05


def test_thick_dilates():
    image = np.zeros((8, 8), np.float32)
    image[2, 3] = 0.5
    image[7, 7] = 1.0
    out = DIGIT_TASKS["thick"].transform(image)
    expected = np.zeros((8, 8), np.float32)
    expected[1:3, 2:4] = 0.5  # a pixel spreads to its up/left neighbours' windows
    expected[6:8, 6:8] = 1.0
    np.testing.assert_array_equal(out, expected)
    base = np.stack([ex.image for ex in load_digits_task("digit-name", "eval")])
    thick = np.stack([ex.image for ex in load_digits_task("thick", "eval")])
    assert (thick >= base).all() and thick.sum() > 1.2 * base.sum()


def test_cached_images_are_protected():
    ex = load_digits_task("digit-name", "train", limit=1)[0]
    with pytest.raises(ValueError):
        ex.image[0, 0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "nope", "split": "train"}, "digit-name"),
        ({"name": "parity", "split": "test"}, "'train' or 'eval'"),
        ({"name": "parity", "split": "train", "eval_fraction": 1.0}, "eval_fraction"),
        ({"name": "parity", "split": "train", "limit": 0}, "limit"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_digits_task(**kwargs)
