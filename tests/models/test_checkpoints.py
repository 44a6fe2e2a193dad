"""Model directories: our own format, and LLaVA / MobileVLM checkpoints the tests write with
``save_pretrained`` in those layouts."""

import json

import pytest
import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from mobile_peft.core.errors import CheckpointError
from mobile_peft.data import save_tokenizer
from mobile_peft.models import build_model, load_model, save_model
from mobile_peft.models.projectors import LDPProjector, ProjectorConfig
from mobile_peft.quant import QuantLinear

IMAGE_TOKEN = "<image>"


def _vision_cfg():
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


def _text_cfg(vocab):
    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_native_round_trip(tmp_path, tiny, tiny_batch, quant):
    model, tokenizer = tiny
    if quant != "none":
        from mobile_peft.quant import quantize_model

        quantize_model(model, quant)
        model.config.quant = quant
    save_model(model, tokenizer, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json"}
    loaded, tok2 = load_model(tmp_path)
    assert loaded.config.quant == quant
    assert tok2.get_vocab() == tokenizer.get_vocab()
    args = (tiny_batch["pixel_values"], tiny_batch["input_ids"])
    torch.testing.assert_close(loaded(*args).logits, model.eval()(*args).logits, rtol=0, atol=0)


def test_load_with_quant_quantises_a_float_model(tmp_path, tiny):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path)
    loaded, _ = load_model(tmp_path, quant="int8")
    assert any(isinstance(m, QuantLinear) for m in loaded.modules())
    save_model(loaded, tokenizer, tmp_path / "q")
    with pytest.raises(ValueError, match="cannot be re-quantised"):
        load_model(tmp_path / "q", quant="int4")


def test_llava_checkpoint_loads_and_matches_hf_logits(tmp_path):
    _, tokenizer = build_model("tiny")
    vocab = tokenizer.get_vocab_size()
    image_id = tokenizer.token_to_id(IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=_vision_cfg(),
        text_config=_text_cfg(vocab),
        image_token_index=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    hf = LlavaForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    save_tokenizer(tokenizer, tmp_path)

    model, _ = load_model(tmp_path)
    assert model.config.vision_feature_layer == -2 and model.num_image_tokens == 16

    pixels = torch.randn(2, 3, 32, 32)
    text = torch.randint(5, vocab, (2, 10))
    ours = model(pixels, text).logits
    hf_ids = torch.cat([torch.full((2, 16), image_id), text], dim=1)
    theirs = hf(input_ids=hf_ids, pixel_values=pixels).logits[:, 16:]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


class _MobileLlamaModelWriter(LlamaForCausalLM):
    """Writes the MobileVLM layout: a Llama LM with ``model.mm_projector`` and
    ``model.vision_tower.vision_tower`` attached, as MobileVLM's MobileLlamaForCausalLM does."""

    def __init__(self, config):
        super().__init__(config)
        self.model.mm_projector = LDPProjector(config.mm_hidden_size, config.hidden_size, ProjectorConfig(type="ldp"))
        holder = nn.Module()
        holder.vision_tower = CLIPVisionModel(_vision_cfg())
        self.model.vision_tower = holder


def _write_mobilevlm(tmp_path, tokenizer, with_vision_config=True):
    cfg = _text_cfg(tokenizer.get_vocab_size())
    cfg.mm_projector_type = "ldpnet"
    cfg.mm_hidden_size = 32
    cfg.mm_vision_select_layer = -2
    cfg.mm_vision_tower = "openai/clip-vit-large-patch14-336"
    if with_vision_config:
        cfg.vision_config = _vision_cfg().to_dict()
    torch.manual_seed(0)
    writer = _MobileLlamaModelWriter(cfg).eval()
    writer.save_pretrained(tmp_path)
    save_tokenizer(tokenizer, tmp_path)
    return writer


def test_mobilevlm_checkpoint_loads_every_tensor(tmp_path):
    _, tokenizer = build_model("tiny")
    writer = _write_mobilevlm(tmp_path, tokenizer)
    keys = json.loads((tmp_path / "config.json").read_text())
    assert keys["mm_projector_type"] == "ldpnet"

    model, _ = load_model(tmp_path)
    assert type(model.projector).__name__ == "LDPProjector" and model.num_image_tokens == 4
    torch.testing.assert_close(model.projector.mlp[1].weight, writer.model.mm_projector.mlp[1].weight)
    torch.testing.assert_close(
        model.vision_tower.encoder.layers[0].self_attn.q_proj.weight,
        writer.model.vision_tower.vision_tower.encoder.layers[0].self_attn.q_proj.weight,
    )
    # The language model is the checkpoint's: same logits for the same embeddings.
    ids = torch.randint(5, tokenizer.get_vocab_size(), (1, 6))
    torch.testing.assert_close(
        model.language_model(input_ids=ids).logits, LlamaForCausalLM.forward(writer, input_ids=ids).logits
    )
    # And the projector output goes through unchanged.
    feats = torch.randn(1, 16, 32)
    torch.testing.assert_close(model.projector(feats), writer.model.mm_projector(feats))


def test_mobilevlm_without_vision_config_is_a_clear_error(tmp_path):
    _, tokenizer = build_model("tiny")
    _write_mobilevlm(tmp_path, tokenizer, with_vision_config=False)
    with pytest.raises(CheckpointError, match="vision tower config is unknown"):
        load_model(tmp_path)


def test_bad_directories_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match="neither a mobile-peft model"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path)


def test_pickle_weights_are_refused(tmp_path, tiny):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no pickle"):
        load_model(tmp_path)


def test_mismatched_weights_are_named(tmp_path, tiny):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text"]["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_model(tmp_path)
