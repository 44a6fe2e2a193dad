"""The adapter registry agrees with the bundle contract: the methods a bundle can carry, their
PEFT types, and each method's rank slots with their (down, up) parameter names."""

import torch

from mobile_peft.adapters import ADAPTERS
from mobile_peft.core import contract


def test_registered_methods_are_the_contracts():
    assert ADAPTERS.names() == sorted(contract.ADAPTER_METHODS)
    for name in ADAPTERS:
        method = ADAPTERS[name]
        assert method.peft_type == contract.PEFT_TYPES[name]
        layer = method.config_class.uniform(2, 4.0, ["fc"]).build_layer(torch.nn.Linear(6, 5), "fc")
        slots = layer.rank_slots()
        assert tuple(slots) == contract.SLOTS[name]
        assert {s: (info.down, info.up) for s, info in slots.items()} == {s: contract.SLOT_PARAMS[s] for s in slots}
