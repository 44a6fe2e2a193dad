"""GGUF in: a tiny Llama written as GGUF (llama.cpp's layout, F32) loads back with the same logits;
wrong architectures, unsupported quantisation types and bad paths are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from mobile_peft.core.errors import CheckpointError
from mobile_peft.models import load_model, save_model
from mobile_peft.models.gguf import is_gguf_source, load_gguf, load_gguf_language_model, read_gguf_info

gguf = pytest.importorskip("gguf")

@pytest.mark.parametrize("tied", [True, False])
def test_gguf_round_trips_to_the_same_logits(tmp_path, tied, write_tiny_gguf):
    path = tmp_path / "tiny.gguf"
    reference, tok = write_tiny_gguf(path, tied=tied)
    info = read_gguf_info(path)
    assert info.architecture == "llama" and info.tensor_types == {"F32": 2 + 9 * 2 + (0 if tied else 1)}
    loaded = load_gguf_language_model(path)
    ids = torch.tensor([tok.encode("question : what digit is shown ? answer : seven").ids])
    torch.testing.assert_close(loaded.model(ids).logits, reference(ids).logits, atol=1e-5, rtol=0)
    assert loaded.tokenizer.encode("seven").ids == tok.encode("seven").ids
    assert loaded.special_tokens["bos_token"] == "<|bos|>" and loaded.special_tokens["eos_token"] == "<|eos|>"


def test_composed_vlm_saves_and_loads_back(tmp_path, write_tiny_gguf):
    path = tmp_path / "tiny.gguf"
    reference, _ = write_tiny_gguf(path, tied=True)
    assert is_gguf_source(path) and is_gguf_source(tmp_path)
    model, tokenizer = load_gguf(tmp_path, vision_tower="clip-tiny", seed=0)  # a directory holding one .gguf
    ids = torch.tensor([[1, 5, 7, 9]])
    torch.testing.assert_close(model.language_model(ids).logits, reference(ids).logits, atol=1e-5, rtol=0)
    spec = model.config.input_spec
    assert (spec.bos_token, spec.eos_token, spec.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    save_model(model, tokenizer, tmp_path / "vlm")
    again, tok2 = load_model(tmp_path / "vlm")
    assert Tokenizer.from_file(str(tmp_path / "vlm" / "tokenizer.json")).get_vocab() == tokenizer.get_vocab()
    from mobile_peft.train.job import make_datasets

    train_ds, _ = make_datasets("digits:digit-name", tok2, again.config.input_spec, 0, train_limit=2)
    batch = torch.utils.data.default_collate([train_ds[0], train_ds[1]])
    a = model(batch["pixel_values"], batch["input_ids"], batch["labels"])
    b = again(batch["pixel_values"], batch["input_ids"], batch["labels"])
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    assert torch.isfinite(a.loss)


def _write_raw(path, arch: str = "llama", qtype=None):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("raw")
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    if qtype is not None:
        block, type_bytes = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 32 // block * type_bytes), dtype=np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_wrong_architecture_is_named(tmp_path):
    _write_raw(tmp_path / "m.gguf", arch="qwen2")
    with pytest.raises(CheckpointError, match=r"'qwen2' model .*only llama"):
        read_gguf_info(tmp_path / "m.gguf")


def test_unsupported_quant_types_are_listed(tmp_path):
    _write_raw(tmp_path / "m.gguf", qtype=gguf.GGMLQuantizationType.Q8_1)
    with pytest.raises(CheckpointError, match=r"GGML types \['Q8_1'\].*llama-quantize"):
        read_gguf_info(tmp_path / "m.gguf")
    _write_raw(tmp_path / "ok.gguf", qtype=gguf.GGMLQuantizationType.Q4_1)  # what SmolLM2's file uses
    assert read_gguf_info(tmp_path / "ok.gguf").tensor_types == {"F32": 1, "Q4_1": 1}


def test_bad_paths(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_gguf_info(tmp_path / "missing.gguf")
    _write_raw(tmp_path / "a.gguf")
    _write_raw(tmp_path / "b.gguf")
    with pytest.raises(CheckpointError, match=r"holds 2 \.gguf files \['a\.gguf', 'b\.gguf'\]; expected exactly one"):
        read_gguf_info(tmp_path)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        read_gguf_info(tmp_path / "junk.gguf")


def test_build_cli_from_gguf(tmp_path, capsys, write_tiny_gguf):
    import json

    from mobile_peft.cli import main

    write_tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "model"
    assert main(["build", "--from-pretrained", str(tmp_path / "tiny.gguf"), "--vision", "clip-tiny", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "tiny-test + clip-tiny" and summary["image_tokens"] == 16
    model, _ = load_model(out)
    assert model.config.text["tie_word_embeddings"] is True
    assert main(["build", "--from-pretrained", str(tmp_path / "nope.gguf"), "--out", str(out)]) != 0
