"""One implementation of each phone-side thing: the authoring layer and the runtime call the
core's functions (spied on here), never copies of them."""

import numpy as np

from mobile_peft.core import datasets, encode


def test_encoding_goes_through_the_core(monkeypatch, tiny_tokenizer, spec):
    from mobile_peft.core.examples import VQAExample
    from mobile_peft.core.spec import BundleInputSpec
    from mobile_peft.data import VQADataset, special_token_ids

    calls = []
    for name in ("encode_image", "encode_text"):
        real = getattr(encode, name)
        monkeypatch.setattr(encode, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    example = VQAExample(np.zeros((8, 8), np.float32), "what digit is shown ?", "zero")
    VQADataset([example], tiny_tokenizer, spec)[0]
    authoring = sorted(calls)
    calls.clear()
    ids = encode.TokenIds(*special_token_ids(tiny_tokenizer, spec))
    encode.Encoder(BundleInputSpec(spec, 1, 40, ids, "tokenizer.json"), tiny_tokenizer).batch([example])
    assert authoring == sorted(calls) == ["encode_image", "encode_text"]


def test_the_data_readers_are_the_cores():
    import mobile_peft.data
    import mobile_peft.runtime.evaluate
    import mobile_peft.runtime.trainer
    import mobile_peft.train.job

    for module in (mobile_peft.data, mobile_peft.train.job, mobile_peft.runtime.trainer, mobile_peft.runtime.evaluate):
        assert module.load_dataset is datasets.load_dataset


def test_adapter_weights_file_is_deterministic_and_reads_back():
    from safetensors.numpy import load_file

    from mobile_peft.core.adapter_files import safetensors_bytes

    tensors = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.weight": np.ones((1, 5), np.float32)}
    meta = {"mobile_peft": "{}", "format": "pt"}
    data = safetensors_bytes(tensors, meta)
    assert data == safetensors_bytes(dict(reversed(list(tensors.items()))), dict(reversed(list(meta.items()))))
    header_len = int.from_bytes(data[:8], "little")
    assert header_len % 8 == 0 and data[8:40] == b'{"__metadata__":{"format":"pt","'
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "x.safetensors").write_bytes(data)
        back = load_file(str(Path(tmp) / "x.safetensors"))
    assert set(back) == set(tensors)
    for key in tensors:
        np.testing.assert_array_equal(back[key], tensors[key])
