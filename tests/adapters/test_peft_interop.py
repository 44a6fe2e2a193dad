"""LoRA files are Hugging Face PEFT files, both ways, for the language model inside a VLM."""

import copy
import warnings

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

from mobile_peft.adapters import LoraConfig, adapter_layers, apply_adapters, load_adapter, save_adapter

IDS = torch.tensor([[1, 5, 9, 42, 7, 3, 11, 60], [8, 8, 2, 99, 0, 4, 17, 23]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_peft_loads_our_lora_into_the_language_model(vlm_factory, randomize_model, tmp_path):
    vlm = vlm_factory()
    pristine = copy.deepcopy(vlm.language_model)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        exclude_modules=r"vision_tower\..*|projector",
        rank_pattern={"v_proj": 4, r"layers\.1\.mlp\.down_proj": 2},
        alpha_pattern={r"layers\.0\.self_attn\.o_proj": 4, "gate_proj": 32},
    )
    paths = apply_adapters(vlm, config)
    assert all(p.startswith("language_model.") for p in paths) and len(paths) == 14
    randomize_model(vlm, std=0.05)
    layers = adapter_layers(vlm)
    layers["language_model.model.layers.0.self_attn.q_proj"].set_rank_mask(
        "lora", torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.25, 1.0])
    )
    layers["language_model.model.layers.1.self_attn.o_proj"].set_rank("lora", 3)
    layers["language_model.model.layers.1.self_attn.k_proj"].set_rank("lora", 0)  # left out of the file
    ours = _logits(vlm.language_model)
    assert not torch.allclose(ours, _logits(pristine), atol=1e-3)  # the adapter matters

    save_adapter(vlm, tmp_path, root="language_model", task_type="CAUSAL_LM")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(pristine, str(tmp_path)).eval()
    complaints = [
        str(w.message) for w in caught if "nexpected" in str(w.message) or "issing" in str(w.message)
    ]
    assert not complaints
    torch.testing.assert_close(_logits(peft_model), ours, atol=1e-5, rtol=1e-5)

    # ...and back into a fresh VLM through our loader, which reads root from the file
    again = vlm_factory()
    loaded = load_adapter(again, tmp_path)
    assert len(loaded) == 13 and all(p.startswith("language_model.") for p in loaded)
    torch.testing.assert_close(_logits(again.language_model), ours, atol=1e-5, rtol=1e-5)


def test_we_load_a_peft_saved_lora(llama_factory, tmp_path):
    peft_model = get_peft_model(
        llama_factory(),
        PeftLoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "up_proj"],
            rank_pattern={"up_proj": 2},
            alpha_pattern={r"layers\.1\.self_attn\.q_proj": 2},
        ),
    ).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)
    peft_model.save_pretrained(str(tmp_path))
    expected = _logits(peft_model)

    model = llama_factory()
    load_adapter(model, tmp_path)
    assert model.model.layers[0].mlp.up_proj.r == 2
    assert model.model.layers[1].self_attn.q_proj.scaling == 2 / 4
    torch.testing.assert_close(_logits(model), expected, atol=1e-5, rtol=1e-5)
