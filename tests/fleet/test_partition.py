"""Non-IID clients are deterministic, label-skewed, and their ranks follow their tier."""

from __future__ import annotations

import pytest

from mobile_peft.core.digits import DIGIT_NAMES
from mobile_peft.core.errors import ConfigError
from mobile_peft.fleet.partition import PartitionConfig, client_data, client_ranks


def test_clients_are_deterministic_and_skewed():
    config = PartitionConfig(tasks=("digit-name", "parity"), classes_per_client=3, train_examples=12, eval_examples=6)
    a, b = client_data(4, config), client_data(4, config)
    assert a.classes == b.classes and [e.question for e in a.train] == [e.question for e in b.train]
    assert a.task == "digit-name" and client_data(5, config).task == "parity"
    assert {DIGIT_NAMES.index(e.answer) for e in a.train + a.eval} <= set(a.classes)
    assert len(a.train) == 12 and len(a.eval) == 6
    assert client_data(4, PartitionConfig(seed=1)).classes != a.classes or client_data(6, config).classes != a.classes


def test_tier_ranks_keep_the_phone_total(layout):
    config = PartitionConfig(tier_ranks=(1, 2))
    for index in range(6):
        ranks = client_ranks(layout, index, config)
        values = [ranks[m][s] for m, s in layout.slots]
        tier = config.tier_ranks[index % 2]
        assert all(1 <= v <= layout.r_max(k) for v, k in zip(values, layout.slots))
        assert sum(values) == tier * len(values) or tier == 1  # tier 1 - 1 clips to 1
    assert client_ranks(layout, 3, config, uniform=2) == {"m.q": {"lora": 2}, "m.v": {"lora": 2}}


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="unknown"):
        PartitionConfig(tasks=("cats",))
