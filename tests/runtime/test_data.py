"""The runtime's numpy encoder and digits table agree with the authoring layer; streams resume exactly."""

import numpy as np
import pytest
import torch

from mobile_peft.runtime.data import (
    DIGIT_TASKS,
    DataStream,
    Encoder,
    StreamPosition,
    bilinear_resize,
    load_examples,
)


@pytest.mark.parametrize("shape,size", [((8, 8), 32), ((8, 8), 5), ((13, 7), 16), ((40, 40), 32)])
def test_bilinear_resize_matches_torch(shape, size):
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]
    np.testing.assert_allclose(bilinear_resize(x, size), ref.numpy(), atol=1e-6)


def test_digit_tasks_agree_with_the_authoring_layer():
    from mobile_peft.data import DIGIT_TASKS as AUTHORING
    from mobile_peft.data import load_digits_task

    assert set(DIGIT_TASKS) == set(AUTHORING)
    for name in DIGIT_TASKS:
        ours, theirs = load_examples(f"digits:{name}", "train", limit=12), load_digits_task(name, "train", limit=12)
        for a, b in zip(ours, theirs, strict=True):
            assert (a.question, a.answer) == (b.question, b.answer)
            np.testing.assert_array_equal(a.image, b.image)


def test_encoder_gives_the_same_tensors_as_vqadataset(tmp_path):
    from mobile_peft.data import (
        VQADataset,
        build_word_tokenizer,
        load_digits_task,
        save_tokenizer,
        special_token_ids,
    )
    from mobile_peft.models import preset_config

    tok = build_word_tokenizer()
    spec = preset_config("tiny", tok.get_vocab_size()).input_spec
    pad, bos, eos = special_token_ids(tok, spec)
    manifest_spec = {**spec.to_dict(), "batch_size": 4, "token_ids": {"pad": pad, "bos": bos, "eos": eos, "ignore_index": -100}}
    encoder = Encoder(manifest_spec, save_tokenizer(tok, tmp_path))
    for task in ("rotated", "next-digit"):
        theirs = VQADataset(load_digits_task(task, "eval", limit=6), tok, spec)
        ours = load_examples(f"digits:{task}", "eval", limit=6)
        pixels, ids, labels = encoder.batch(ours)
        for i in range(6):
            np.testing.assert_allclose(pixels[i], theirs[i]["pixel_values"].numpy(), atol=1e-6)
            np.testing.assert_array_equal(ids[i], theirs[i]["input_ids"].numpy())
            np.testing.assert_array_equal(labels[i], theirs[i]["labels"].numpy())
    rgb = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    from mobile_peft.data import encode_image

    np.testing.assert_allclose(encoder.image(rgb), encode_image(rgb, spec).numpy(), atol=1e-6)


class _FakeEncoder:
    batch_size = 3

    def image(self, image):
        return image

    def text(self, question, answer):
        return np.zeros(2, np.int64), np.zeros(2, np.int64)


def test_stream_resumes_exactly_across_epochs():
    from mobile_peft.runtime.data import Example

    examples = [Example(np.full((1,), i, np.float32), "q", "a") for i in range(7)]
    full = DataStream(examples, _FakeEncoder(), StreamPosition(seed=3))
    batches = [full.next_batch()[0].ravel().tolist() for _ in range(6)]  # 18 items: crosses 2 epochs
    assert sorted(batches[0] + batches[1] + [batches[2][0]]) == list(range(7))
    part = DataStream(examples, _FakeEncoder(), StreamPosition(seed=3))
    for _ in range(4):
        part.next_batch()
    resumed = DataStream(examples, _FakeEncoder(), StreamPosition(**part.position.as_dict()))
    assert [resumed.next_batch()[0].ravel().tolist() for _ in range(2)] == batches[4:]


def test_folder_split_matches_the_authoring_layer(tmp_path):
    from PIL import Image

    from mobile_peft.data import load_dataset

    (tmp_path / "images").mkdir()
    lines = []
    for i in range(7):
        Image.fromarray((np.arange(64).reshape(8, 8) * i % 255).astype(np.uint8)).save(tmp_path / "images" / f"{i}.png")
        lines += [{"image": f"{i}.png", "question": f"what is {i} ?", "answer": str(i)}, {"image": f"{i}.png", "question": "odd ?", "answer": "no"}]
    (tmp_path / "annotations.jsonl").write_text("\n".join(__import__("json").dumps(r) for r in lines))
    for split in ("train", "eval"):
        ours, theirs = load_examples(str(tmp_path), split, seed=1), load_dataset(str(tmp_path), split, seed=1)
        assert [(e.question, e.answer) for e in ours] == [(e.question, e.answer) for e in theirs]
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.image, b.image)
