"""A phone's local round on the runtime: only its rank slices come back, and they trained."""

from __future__ import annotations

import numpy as np

from mobile_peft.fleet.client import LocalTrainer
from mobile_peft.fleet.partition import PartitionConfig, client_data
from mobile_peft.runtime.bundle import Bundle


def test_fit_trains_and_returns_only_the_clients_slices(fleet_bundle):
    trainer = LocalTrainer(Bundle.open(fleet_bundle))
    layout = trainer.layout
    ranks = layout.uniform_ranks(1)
    initial = trainer.initial()
    start = layout.slice_params(initial, ranks)
    data = client_data(0, PartitionConfig(train_examples=8, eval_examples=4))
    result = trainer.fit(start, ranks, data.train, steps=3, seed=1)
    assert result.examples == 8 and len(result.losses) == 3 and np.isfinite(result.losses).all()
    assert set(result.tensors) == set(start)
    for key in layout.slots:
        down, up = layout.names(key)
        assert result.tensors[down].shape == (1, layout.pairs[key]["down"].shape[1])
        assert result.tensors[up].shape[1] == 1
    ups = [layout.names(k)[1] for k in layout.slots]
    assert not any(start[n].any() for n in ups) and all(result.tensors[n].any() for n in ups)  # B left zero
    acc = trainer.accuracy(result.tensors, ranks, data.eval)
    assert 0.0 <= acc <= 1.0
