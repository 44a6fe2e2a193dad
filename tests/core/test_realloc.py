"""HyDRA's dynamic phase has one implementation: the authoring trainer's callback and the phone's
runtime re-allocator make the same decisions at the same steps from the same gradients, and grow
the same fresh columns."""

import numpy as np
import torch

from mobile_peft.adapters import LoraConfig, adapter_layers, apply_adapters
from mobile_peft.allocators import RankSchedule
from mobile_peft.allocators.hydra_rank.allocator import HydraRankReallocator
from mobile_peft.allocators.schedule import Phase, model_slots
from mobile_peft.core import perf_model, realloc
from mobile_peft.core.manifest import Trainable
from mobile_peft.core.schedule import MaskInput
from mobile_peft.models import build_model
from mobile_peft.runtime.realloc import Reallocator

TARGETS = r"language_model\.model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"


def _setup():
    model, _ = build_model("tiny", quant="int8", seed=0)
    apply_adapters(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    modules = model_slots(model)
    first = {m: {"lora": 2 if m.endswith("v_proj") else 3} for m in modules}
    budget = sum(r["lora"] * modules[m]["lora"]["params_per_rank"] for m, r in first.items())
    model_json = {
        "kind": perf_model.MODEL_KIND,
        "version": perf_model.MODEL_VERSION,
        "feature_names": list(perf_model.FEATURES),
        "weights": [-0.5, -0.5, -0.5, -2.0, -0.5, 1.5],
        "intercept": 3.0,
        "min_rank": 1,
    }
    schedule = RankSchedule(
        "hydra-rank",
        "lora",
        budget,
        modules,
        [Phase(0, first)],
        performance_model=model_json,
        mask_inputs=[MaskInput(m, "lora", 4) for m in modules],
    )
    schedule.apply(model, 0)
    trainable = []
    for path, layer in adapter_layers(model).items():
        slot = layer.rank_slots()["lora"]
        for param, role in ((slot.down, "down"), (slot.up, "up")):
            trainable.append(
                Trainable(f"{path}.{param}", path, "lora", role, param, tuple(getattr(layer, param).shape))
            )
    return model, schedule, trainable


def test_authoring_and_runtime_reallocate_identically():
    model, schedule, trainable = _setup()
    total, every = 10, 3
    authoring_schedule = RankSchedule.from_dict(schedule.to_dict())
    authoring = HydraRankReallocator(
        authoring_schedule, every, total, min_gain=realloc.DEFAULT_MIN_GAIN, seed=5
    )
    phone = Reallocator(schedule, schedule.performance_model, trainable, every, total, seed=5)
    layers = adapter_layers(model)
    params = {t.name: getattr(layers[t.module], t.param).detach().numpy().copy() for t in trainable}
    ranks = schedule.ranks(0)
    rng = np.random.default_rng(0)
    phone_events = []
    for step in range(1, total + 1):
        grads = {}
        for t in trainable:  # language q projections get the largest gradients: the model moves ranks there
            scale = 3.0 if t.module.endswith("q_proj") else 0.3
            grads[t.name] = (rng.standard_normal(t.shape) * scale).astype(np.float32)
            getattr(layers[t.module], t.param).grad = torch.from_numpy(grads[t.name].copy())
        authoring.on_step_end(step, 1.0, model)
        phone.observe(grads, ranks)
        if phone.due(step):
            decision = phone.decide(step, ranks)
            phone_events.append(decision.event(schedule.budget_params))
            if decision.applied:
                ranks = phone.grow(params, decision)
    assert [e["step"] for e in phone_events] == [3, 6]  # 9 + 3 > 10: no re-allocation right before the end
    assert phone_events == authoring.events
    assert any(e["applied"] for e in phone_events)
    assert authoring_schedule.phases[-1].ranks == ranks
    for t in trainable:  # the same fresh columns were grown on both sides
        np.testing.assert_array_equal(getattr(layers[t.module], t.param).detach().numpy(), params[t.name])


def test_the_signal_is_the_squared_gradient_per_active_rank():
    g_down, g_up = np.ones((4, 3), np.float32), np.full((5, 4), 2.0, np.float32)
    assert realloc.rank_signal(g_down, g_up, np.array([True, True, False, False])) == (2 * 3 + 4 * 5 * 2) / 2
    assert realloc.rank_signal(g_down, g_up, np.arange(2)) == realloc.rank_signal(
        g_down, g_up, np.array([1, 1, 0, 0], bool)
    )
    signals = realloc.RankSignals(decay=0.5)
    signals.observe("m::lora", 4.0)
    signals.observe("m::lora", 16.0)
    assert signals.signals() == {"m::lora": 10.0**0.5}


def test_gradient_spectrum_is_the_squared_singular_values():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 3))
    assert realloc.gradient_spectrum(g) == list(np.square(np.linalg.svd(g, compute_uv=False)))
    assert realloc.gradient_spectrum(np.zeros((4, 2))) == [0.0, 0.0]


def test_gradient_spectra_open_every_column_without_changing_the_model():
    """The sketch pass opens the inactive columns (their up zeroed) and puts everything back;
    the inactive columns get a non-zero sketch, so every rank of a slot has a measured worth."""
    from mobile_peft.allocators.hydra_rank.signals import gradient_spectra
    from mobile_peft.train.job import make_datasets

    model, tokenizer = build_model("tiny", seed=0)
    apply_adapters(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    for layer in adapter_layers(model).values():
        layer.set_rank("lora", 2)
        with torch.no_grad():
            layer.lora_B.normal_()  # trained active and stale inactive columns alike
    data, _ = make_datasets("digits:parity", tokenizer, model.config.input_spec, train_limit=16, eval_limit=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spectra = gradient_spectra(model, data, batches=2, batch_size=4, seed=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(spectra) == {f"{m}::lora" for m in adapter_layers(model)}
    for values in spectra.values():
        assert len(values) == 4 and values == sorted(values, reverse=True) and values[3] > 0


# A spectral model (every group weighs the same): reads each unit's squared singular values.
SPECTRAL_MODEL = {
    "kind": perf_model.SPECTRAL_KIND,
    "version": perf_model.SPECTRAL_VERSION,
    "feature_names": list(perf_model.GROUPS),
    "weights": [-1.0] * 5,
    "intercept": 1.0,
}


def test_reallocation_refuses_a_model_it_cannot_feed():
    """Training-time re-allocation feeds per-step gradient RMS values: a spectral model (which reads
    spectra) or an unknown version is refused up front, naming what was given."""
    import pytest

    from mobile_peft.core.errors import ConfigError

    units = {"language_model.model.layers.0.mlp.up_proj::lora": {"r_max": 2, "params_per_rank": 4}}
    with pytest.raises(ConfigError, match="spectral-ridge"):
        realloc.Reallocation(SPECTRAL_MODEL, units, 8, every=2, total_steps=8)
    with pytest.raises(ConfigError, match="logrank-ridge"):  # a caller that measures spectra only
        realloc.Reallocation(
            {**SPECTRAL_MODEL, "kind": perf_model.MODEL_KIND, "version": perf_model.MODEL_VERSION,
             "feature_names": list(perf_model.FEATURES), "weights": [-1.0] * 6},
            units, 8, every=2, total_steps=8, kinds=(perf_model.SPECTRAL_KIND,),
        )
    with pytest.raises(ConfigError, match="version 7"):
        realloc.Reallocation(
            {**SPECTRAL_MODEL, "kind": perf_model.MODEL_KIND, "version": 7}, units, 8, every=2, total_steps=8
        )


def test_a_spectral_reallocation_reads_spectra():
    """A caller that measures spectra (the authoring trainer) re-allocates with a spectral model:
    the rank goes to the unit whose spectrum holds the energy, within the budget."""
    units = {
        "language_model.model.layers.0.mlp.up_proj::lora": {"r_max": 4, "params_per_rank": 4},
        "language_model.model.layers.0.self_attn.q_proj::lora": {"r_max": 4, "params_per_rank": 4},
    }
    policy = realloc.Reallocation(SPECTRAL_MODEL, units, 16, every=2, total_steps=8, min_gain=0.0,
                                  kinds=(perf_model.SPECTRAL_KIND,))
    spectra = {
        "language_model.model.layers.0.mlp.up_proj::lora": [1.0, 0.0, 0.0, 0.0],
        "language_model.model.layers.0.self_attn.q_proj::lora": [4.0, 3.0, 2.0, 1.0],
    }
    decision = policy.decide(2, {u: 2 for u in units}, spectra)
    assert decision.applied
    assert decision.ranks == {
        "language_model.model.layers.0.mlp.up_proj::lora": 1,  # the floor: its one direction
        "language_model.model.layers.0.self_attn.q_proj::lora": 3,
    }
    assert decision.params == 16
    assert decision.predicted_after < decision.predicted_before
