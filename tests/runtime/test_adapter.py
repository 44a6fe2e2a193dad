"""The runtime's personal adapter and the authoring layer's save_adapter are one writer
(core.adapter_files): for the same tensors and masks they write byte-identical files."""

import numpy as np
import torch

from mobile_peft.core import adapter_files
from mobile_peft.runtime.adapter import read_adapter, write_adapter
from mobile_peft.runtime.bundle import Bundle

from .conftest import tiny_model


def test_runtime_and_authoring_write_the_same_adapter_files(monkeypatch, pte_bundle, tmp_path):
    from mobile_peft.adapters import adapter_layers, save_adapter

    calls = []
    real = adapter_files.write_adapter_files
    monkeypatch.setattr(adapter_files, "write_adapter_files", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    bundle = Bundle.open(pte_bundle)
    rng = np.random.default_rng(0)
    params = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in bundle.trainable}
    masks = bundle.schedule.phase_masks(1)  # the v projections at rank 2 of 4
    write_adapter(bundle, params, masks, tmp_path / "runtime")

    model, _ = tiny_model()  # the exported model, given the same tensors and masks
    layers = adapter_layers(model)
    with torch.no_grad():
        for t in bundle.trainable:
            getattr(layers[t.module], t.param).copy_(torch.from_numpy(params[t.name]))
        for entry, mask in zip(bundle.schedule.mask_inputs, masks):
            layers[entry.module].set_rank_mask(entry.slot, torch.from_numpy(mask))
    save_adapter(model, tmp_path / "authoring", root="language_model")

    assert calls == [tmp_path / "runtime", tmp_path / "authoring"]
    for name in (adapter_files.ADAPTER_CONFIG_NAME, adapter_files.ADAPTER_WEIGHTS_NAME):
        assert (tmp_path / "runtime" / name).read_bytes() == (tmp_path / "authoring" / name).read_bytes()
    # and reading it back gives the bundle-shaped tensors and masks that compute the same adapter
    back, back_masks = read_adapter(bundle, tmp_path / "runtime")
    for t in bundle.trainable:
        entry = next(e for e in bundle.schedule.mask_inputs if (e.module, e.slot) == (t.module, t.slot))
        r = int(masks[bundle.schedule.mask_inputs.index(entry)].sum())
        kept = back[t.name][:r] if t.role == "down" else back[t.name][:, :r]
        want = params[t.name][:r] if t.role == "down" else params[t.name][:, :r]
        np.testing.assert_array_equal(kept, want)
    assert [m.tolist() for m in back_masks] == [m.tolist() for m in masks]
