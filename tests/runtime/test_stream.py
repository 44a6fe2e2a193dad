"""The runtime's data stream resumes exactly; its encoder and readers are the core's."""

import numpy as np

from mobile_peft.core.examples import VQAExample
from mobile_peft.runtime.data import DataStream, StreamPosition


class _FakeEncoder:
    batch_size = 3

    def text(self, question, answer, source=""):
        return np.zeros(2, np.int64), np.zeros(2, np.int64)

    def image(self, image):
        return image


def test_stream_resumes_exactly_across_epochs():
    examples = [VQAExample(np.full((1,), i, np.float32), "q", "a") for i in range(7)]
    full = DataStream(examples, _FakeEncoder(), StreamPosition(seed=3))
    batches = [full.next_batch()[0].ravel().tolist() for _ in range(6)]  # 18 items: crosses 2 epochs
    assert sorted(batches[0] + batches[1] + [batches[2][0]]) == list(range(7))
    part = DataStream(examples, _FakeEncoder(), StreamPosition(seed=3))
    for _ in range(4):
        part.next_batch()
    resumed = DataStream(examples, _FakeEncoder(), StreamPosition(**part.position.as_dict()))
    assert [resumed.next_batch()[0].ravel().tolist() for _ in range(2)] == batches[4:]


def test_the_bundle_encoder_is_the_core_encoder_fed_by_the_manifest(pte_bundle):
    """A bundle's batches are the core's encoding with the manifest's token ids -- the same
    arrays the authoring layer's VQADataset yields for the model's spec and tokeniser."""
    from mobile_peft.core import encode
    from mobile_peft.core.datasets import load_dataset
    from mobile_peft.data import VQADataset, load_tokenizer
    from mobile_peft.runtime.bundle import Bundle

    bundle = Bundle.open(pte_bundle)
    encoder = bundle.encoder()
    assert isinstance(encoder, encode.Encoder)
    examples = load_dataset("digits:rotated", "eval", limit=4)
    pixels, ids, labels = encoder.batch(examples)
    theirs = VQADataset(examples, load_tokenizer(pte_bundle), bundle.input_spec.spec)
    for i in range(4):
        np.testing.assert_array_equal(pixels[i], theirs[i]["pixel_values"].numpy())
        np.testing.assert_array_equal(ids[i], theirs[i]["input_ids"].numpy())
        np.testing.assert_array_equal(labels[i], theirs[i]["labels"].numpy())
