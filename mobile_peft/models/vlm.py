"""``MobileVLM``: vision tower -> projector -> image tokens + text tokens -> Llama decoder.

The forward is written for export: image tokens are concatenated *before* the text in a fixed
layout (no ``masked_scatter``), the causal mask and position ids are precomputed buffers passed
explicitly (no packed-sequence detection inside transformers), and nothing branches on tensor
values. Shapes::

    pixel_values [B, 3, S, S] --vision tower--> [B, P, Dv] --projector--> [B, N, D]
    input_ids    [B, T]       --embeddings---->                            [B, T, D]
    cat -> [B, N + T, D] --decoder--> hidden [B, N + T, D] -> logits of text positions [B, T, V]

The loss is the next-token cross-entropy on the text positions whose label is not -100 (the
answer and its ``<eos>``): logits at text position t predict ``labels[t + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from ..core.errors import ConfigError
from ..core.spec import IGNORE_INDEX
from .config import MobileVLMConfig
from .projectors import build_projector, projector_tokens

_VISION = {
    "clip": (CLIPVisionConfig, CLIPVisionModel),
    "siglip": (SiglipVisionConfig, SiglipVisionModel),
}


@dataclass
class VLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


def build_vision_config(config: MobileVLMConfig):
    cfg_cls, _ = _VISION[config.vision_type]
    kwargs = dict(config.vision)
    kwargs.setdefault("attn_implementation", "eager")
    if config.vision_type == "siglip":
        kwargs.setdefault("vision_use_head", False)
    return cfg_cls(**kwargs)


def build_text_config(config: MobileVLMConfig) -> LlamaConfig:
    kwargs = dict(config.text)
    kwargs.setdefault("attn_implementation", "eager")
    return LlamaConfig(**kwargs)


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]`` over labelled tokens."""
    vocab = logits.shape[-1]
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


class MobileVLM(nn.Module):
    """A mobile vision-language model with an export-friendly forward (see module docstring)."""

    def __init__(self, config: MobileVLMConfig) -> None:
        super().__init__()
        self.config = config
        _, tower_cls = _VISION[config.vision_type]
        vision_config = build_vision_config(config)
        text_config = build_text_config(config)
        self.vision_tower = tower_cls(vision_config)
        self.projector = build_projector(vision_config.hidden_size, text_config.hidden_size, config.projector)
        self.language_model = LlamaForCausalLM(text_config)
        self.num_image_tokens = projector_tokens(config.num_patches, config.projector)
        max_len = self.num_image_tokens + config.input_spec.max_text_len
        causal = torch.full((max_len, max_len), torch.finfo(torch.float32).min).triu(1)
        self.register_buffer("causal_mask", causal[None, None], persistent=False)
        self.register_buffer("position_ids", torch.arange(max_len)[None], persistent=False)

    @property
    def max_sequence_length(self) -> int:
        return self.causal_mask.shape[-1]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> the vision tower's features the projector reads, ``[B, N, D_vision]``."""
        out = self.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
        features = out.hidden_states[self.config.vision_feature_layer]
        return features[:, 1:] if self.config.drop_cls else features

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> image tokens ``[B, N, D]``."""
        return self.projector(self.image_features(pixel_values))

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> VLMOutput:
        image_tokens = self.encode_images(pixel_values)
        text_tokens = self.language_model.get_input_embeddings()(input_ids)
        embeds = torch.cat([image_tokens.to(text_tokens.dtype), text_tokens], dim=1)
        batch, length = embeds.shape[0], embeds.shape[1]
        if length > self.max_sequence_length:  # shapes are static under export: a Python check
            raise ConfigError(
                f"sequence of {length} tokens exceeds the model's {self.max_sequence_length} "
                f"({self.num_image_tokens} image + input_spec.max_text_len text)."
            )
        hidden = self.language_model.model(
            inputs_embeds=embeds,
            attention_mask=self.causal_mask[:, :, :length, :length].expand(batch, 1, length, length),
            position_ids=self.position_ids[:, :length].expand(batch, length),
        ).last_hidden_state
        logits = self.language_model.lm_head(hidden[:, self.num_image_tokens :])
        loss = answer_loss(logits, labels) if labels is not None else None
        return VLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def answer_correct(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per example, whether every answer token (and the closing ``<eos>``) is the argmax.

        With teacher forcing this equals exact match under greedy decoding: greedy decoding
        reproduces the answer iff each answer token is the argmax given the correct prefix.
        Returns a bool tensor ``[B]``.
        """
        logits = self.forward(pixel_values, input_ids).logits
        return correct_answers(logits, labels)


def correct_answers(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    pred = logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    return ((pred == target) | ~mask).all(dim=1)
