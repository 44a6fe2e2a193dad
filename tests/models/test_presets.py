"""Presets build real architectures; large ones are sized on the meta device (no allocation)."""

import pytest
import torch

from mobile_peft.core.spec import IGNORE_INDEX
from mobile_peft.models import PRESETS, count_parameters, meta_model
from mobile_peft.models.vlm import answer_loss, correct_answers


@pytest.mark.parametrize("name", [n for n in PRESETS.names() if PRESETS[n].published_params])
def test_large_presets_match_published_sizes_within_5_percent(name):
    model = meta_model(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    n = count_parameters(model)
    published = PRESETS[name].published_params
    assert abs(n / published - 1) <= 0.05, f"{name}: {n:,} vs published {published:,}"


@pytest.mark.parametrize(
    "name,image_tokens", [("tiny", 16), ("smolvlm-256m", 64), ("mobilevlm-1.7b", 144), ("mobilevlm-3b", 144)]
)
def test_image_token_counts(name, image_tokens):
    assert meta_model(name).num_image_tokens == image_tokens


def test_mobilevlm_uses_ldp_and_layer_minus_two():
    model = meta_model("mobilevlm-1.7b")
    assert type(model.projector).__name__ == "LDPProjector"
    assert model.config.vision_feature_layer == -2 and model.config.drop_cls


def test_tiny_forward_shapes_and_loss(tiny, tiny_batch):
    model, tokenizer = tiny
    out = model(tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["labels"])
    b, t = tiny_batch["input_ids"].shape
    assert out.logits.shape == (b, t, tokenizer.get_vocab_size())
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # The loss only looks at labelled (answer) tokens: changing an unlabelled label changes nothing.
    labels = tiny_batch["labels"].clone()
    assert (labels == IGNORE_INDEX).any()
    torch.testing.assert_close(answer_loss(out.logits, labels), out.loss)


def test_loss_is_shifted_cross_entropy_on_answer_tokens():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1]])
    expected = torch.nn.functional.cross_entropy(logits[0, 1:3], torch.tensor([3, 1]))
    torch.testing.assert_close(answer_loss(logits, labels), expected)


def test_correct_answers_needs_every_answer_token():
    logits = torch.zeros(2, 3, 4)
    logits[:, 0, 2] = 1  # predicts labels[:, 1]
    logits[0, 1, 3] = 1  # predicts labels[:, 2]
    labels = torch.tensor([[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 2, 3]])
    assert correct_answers(logits, labels).tolist() == [True, False]


def test_image_tokens_reach_the_text_positions(tiny, tiny_batch):
    model, _ = tiny
    a = model(tiny_batch["pixel_values"], tiny_batch["input_ids"]).logits
    b = model(torch.zeros_like(tiny_batch["pixel_values"]), tiny_batch["input_ids"]).logits
    assert not torch.allclose(a, b)


def test_forward_exports_without_masked_scatter_or_data_dependent_control_flow(tiny, tiny_batch):
    model, _ = tiny
    args = (tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["labels"])

    class LossOnly(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values, input_ids, labels):
            return self.m(pixel_values, input_ids, labels).loss

    ep = torch.export.export(LossOnly(model), args, strict=False)
    ops = {str(node.target) for node in ep.graph.nodes if node.op == "call_function"}
    assert not any("masked_scatter" in op or "nonzero" in op for op in ops), ops
    torch.testing.assert_close(ep.module()(*args), LossOnly(model)(*args))


def test_too_long_text_is_a_clear_error(tiny, tiny_batch):
    model, _ = tiny
    ids = torch.zeros(1, model.config.input_spec.max_text_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds"):
        model(tiny_batch["pixel_values"][:1], ids)
