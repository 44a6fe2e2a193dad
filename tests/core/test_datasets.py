import json
import re

import numpy as np
import pytest
from PIL import Image

from mobile_peft.core.errors import DataError
from mobile_peft.data import load_dataset, load_folder


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_lines(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (folder / "annotations.jsonl").write_text(text + "\n")


@pytest.fixture
def good_folder(tmp_path):
    folder = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for i in range(6):
        _write_png(folder / "images" / f"rgb{i}.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    _write_png(folder / "images" / "grey.png", rng.integers(0, 256, (7, 7), dtype=np.uint8))
    lines = [
        {"image": "images/rgb0.png", "question": "is it a cat ?", "answer": "yes"},
        {"image": "rgb0.png", "question": "what colour is it ?", "answer": "black"},  # same image
        "",  # blank lines are skipped
        {"image": "grey.png", "question": "is it a dog ?", "answer": "no", "id": 7},  # extra keys ok
    ] + [{"image": f"rgb{i}.png", "question": "is it a cat ?", "answer": "no"} for i in range(1, 6)]
    _write_lines(folder, lines)
    return folder


def test_happy_path(good_folder):
    examples = load_folder(good_folder)
    assert len(examples) == 8
    first, second, grey = examples[:3]
    assert (first.question, first.answer) == ("is it a cat ?", "yes")
    assert first.image.shape == (10, 12, 3) and first.image.dtype == np.uint8
    assert second.image is first.image  # one read per image file
    assert grey.image.shape == (7, 7) and grey.answer == "no"
    original = np.asarray(Image.open(good_folder / "images" / "rgb0.png"))
    np.testing.assert_array_equal(first.image, original)


def test_split_is_deterministic_disjoint_and_by_image(good_folder):
    train = load_folder(good_folder, "train", seed=1)
    eval_ = load_folder(good_folder, "eval", seed=1)
    assert len(train) + len(eval_) == 8 and eval_ and train
    train_ids = {id(e.image) for e in train}
    assert not train_ids & {id(e.image) for e in eval_}  # questions about one image stay together
    again = load_folder(good_folder, "eval", seed=1)
    assert [(e.question, e.answer) for e in again] == [(e.question, e.answer) for e in eval_]
    seeds = {tuple(e.image.tobytes()[:8] for e in load_folder(good_folder, "eval", seed=s)) for s in range(6)}
    assert len(seeds) > 1


def test_load_dataset_with_a_folder(good_folder):
    train = load_dataset(str(good_folder), "train", seed=0)
    eval_ = load_dataset(str(good_folder), "eval", seed=0)
    assert len(train) + len(eval_) == 8
    assert len(load_dataset(str(good_folder), "train", limit=2)) == 2


def test_all_bad_lines_in_one_error(tmp_path):
    folder = tmp_path / "bad"
    _write_png(folder / "images" / "ok.png", np.zeros((4, 4, 3), np.uint8))
    (folder / "images" / "broken.png").write_bytes(b"not a png at all")
    _write_lines(
        folder,
        [
            {"image": "ok.png", "question": "fine ?", "answer": "yes"},  # 1: good
            '{"image": "ok.png", "question": ',  # 2: invalid JSON
            '["a", "list"]',  # 3: not an object
            {"image": "ok.png", "question": "q"},  # 4: missing answer
            {"image": "ok.png", "question": 5, "answer": "a"},  # 5: wrong type
            {"image": "ok.png", "question": "q", "answer": "  "},  # 6: empty answer
            {"image": "missing.png", "question": "q", "answer": "a"},  # 7: image missing
            {"image": "broken.png", "question": "q", "answer": "a"},  # 8: unreadable image
        ],
    )
    with pytest.raises(DataError) as info:
        load_folder(folder)
    message = str(info.value)
    assert "7 problem(s)" in message
    assert "line 1:" not in message
    for number, what in [
        (2, "invalid JSON"),
        (3, "expected a JSON object, got list"),
        (4, "missing key 'answer'"),
        (5, "'question' must be a string, got int"),
        (6, "'answer' is empty"),
        (7, "image file 'missing.png' not found"),
        (8, "is not an image file PIL can read"),
    ]:
        assert re.search(rf"line {number}: [^\n]*{re.escape(what)}", message), (number, what)
    assert "Fix these lines" in message and '"question"' in message


def test_empty_annotations(tmp_path):
    _write_lines(tmp_path / "empty", ["", "   "])
    with pytest.raises(DataError, match="has no usable examples"):
        load_folder(tmp_path / "empty")


def test_missing_annotations_and_split_errors(tmp_path, good_folder):
    (tmp_path / "noann").mkdir()
    with pytest.raises(DataError, match="has no annotations.jsonl"):
        load_folder(tmp_path / "noann")
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="'all', 'train' or 'eval'"):
        load_folder(good_folder, "test")


def test_split_needs_two_images(tmp_path):
    folder = tmp_path / "one"
    _write_png(folder / "images" / "a.png", np.zeros((4, 4), np.uint8))
    _write_lines(folder, [{"image": "a.png", "question": "q", "answer": "a"}])
    assert len(load_folder(folder)) == 1
    with pytest.raises(DataError, match="at least 2"):
        load_folder(folder, "train")


def test_load_dataset_digits():
    assert len(load_dataset("digits", "eval")) == 360
    default = load_dataset("digits", "train", limit=5)
    named = load_dataset("digits:digit-name", "train", limit=5)
    assert [e.answer for e in default] == [e.answer for e in named]
    assert {e.answer for e in load_dataset("digits:parity", "train", limit=20)} == {"even", "odd"}


@pytest.mark.parametrize("spec", ["digits:nope", "digits:", "mnist", "/no/such/folder"])
def test_load_dataset_errors_list_the_options(spec):
    with pytest.raises(DataError) as info:
        load_dataset(spec, "train")
    message = str(info.value)
    assert "digits:<task>" in message
    for task in ("digit-name", "parity", "next-digit", "greater-than-four", "rotated", "thick", "inverted"):
        assert task in message


def test_load_dataset_bad_split():
    with pytest.raises(DataError, match="'train' or 'eval'"):
        load_dataset("digits", "all")


def _untrusted_folder(tmp_path):
    folder = tmp_path / "untrusted"
    _write_png(folder / "images" / "ok.png", np.zeros((4, 4, 3), np.uint8))
    data = (folder / "images" / "ok.png").read_bytes()
    _write_png(folder / "images" / "noise.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noise = (folder / "images" / "noise.png").read_bytes()
    (folder / "images" / "truncated.png").write_bytes(noise[: len(noise) * 2 // 3])  # header intact, pixels cut
    Image.new("1", (8000, 8000)).save(folder / "images" / "bomb.png")  # 64 M pixels in a few KB
    (tmp_path / "secret.png").write_bytes(data)
    (folder / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    lines = [
        {"image": "ok.png", "question": "fine ?", "answer": "yes"},  # 1
        {"image": "../../etc/passwd", "question": "q", "answer": "a"},  # 2
        {"image": "/etc/passwd", "question": "q", "answer": "a"},  # 3
        {"image": "link.png", "question": "q", "answer": "a"},  # 4
        {"image": "truncated.png", "question": "q", "answer": "a"},  # 5
        {"image": "bomb.png", "question": "q", "answer": "a"},  # 6
        {"image": "ok.png", "question": "q" * 1001, "answer": "a"},  # 7
    ]
    _write_lines(folder, lines)
    with (folder / "annotations.jsonl").open("ab") as f:
        f.write(b'{"image": "ok.png", "question": "caf\xe9", "answer": "a"}\n')  # 8: Latin-1, not UTF-8
    return folder


def test_untrusted_lines_are_refused_with_file_and_line(tmp_path):
    folder = _untrusted_folder(tmp_path)
    with pytest.raises(DataError) as info:
        load_folder(folder)
    message = str(info.value)
    assert "7 problem(s)" in message
    for number, what in [
        (2, "leaves the data folder"),
        (3, "leaves the data folder"),
        (4, "outside the data folder"),
        (5, "cannot decode image"),
        (6, "8000x8000 pixels, over the limit"),
        (7, "1,001 characters, over the limit of 1,000"),
        (8, "not UTF-8"),
    ]:
        assert re.search(rf"line {number}: [^\n]*{re.escape(what)}", message), (number, what)


def test_skip_bad_leaves_bad_lines_out_and_lists_them(tmp_path):
    folder = _untrusted_folder(tmp_path)
    skipped: list[str] = []
    examples = load_folder(folder, skip_bad=True, skipped=skipped)
    assert [e.question for e in examples] == ["fine ?"]
    assert examples[0].source.endswith("annotations.jsonl:1")
    assert len(skipped) == 7 and all(":" in s and "annotations.jsonl" in s for s in skipped)
    _write_lines(tmp_path / "all_bad", [{"image": "none.png", "question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="no usable examples"):
        load_folder(tmp_path / "all_bad", skip_bad=True)


def test_a_too_long_line_names_its_file_and_line(tmp_path, tiny_tokenizer):
    from mobile_peft.core.spec import InputSpec
    from mobile_peft.data import VQADataset

    folder = tmp_path / "long"
    _write_png(folder / "images" / "ok.png", np.zeros((4, 4, 3), np.uint8))
    _write_lines(folder, [{"image": "ok.png", "question": " ".join(["what digit is shown ?"] * 8), "answer": "one"}])
    with pytest.raises(DataError, match=r"annotations\.jsonl:1: question .* needs \d+ tokens"):
        VQADataset(load_folder(folder), tiny_tokenizer, InputSpec(image_size=8))
