"""Fixtures of the allocator tests: the tiny model with LoRA / Hydra adapters and small data."""

from __future__ import annotations

import copy

import pytest

from mobile_peft.adapters import apply_adapters
from mobile_peft.train.job import make_adapter_config, make_datasets


@pytest.fixture(scope="session")
def small_data(_tiny_base):
    model, tokenizer = _tiny_base
    return make_datasets("digits:parity", tokenizer, model.config.input_spec, train_limit=96, eval_limit=16)


@pytest.fixture
def adapted(_tiny_base):
    """``make(adapter, r_max)`` -> a fresh tiny model carrying adapters on the default targets."""

    def make(adapter: str = "lora", r_max: int = 8):
        model = copy.deepcopy(_tiny_base[0])
        apply_adapters(model, make_adapter_config(adapter, r_max, None, model.config.default_targets))
        return model

    return make


@pytest.fixture
def fast_options():
    """Allocator options small enough for tests (hydra-rank re-allocates every 2 steps)."""
    return FAST_OPTIONS


FAST_OPTIONS = {
    "uniform": {},
    "hydra-rank": {"warmup_steps": 2, "probes": 4, "probe_steps": 2, "probe_val": 16, "probe_batch_size": 8, "reallocate_every": 2, "min_gain": 0.0},
    "ard": {"plan_steps": 2, "plan_batch_size": 8},
}
