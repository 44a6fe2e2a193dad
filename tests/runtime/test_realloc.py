"""On-device re-allocation (hydra-rank bundles): the shipped performance model picks new ranks from
the runtime's own gradients, every change is logged, and every allocation keeps the budget."""

import json
import shutil

import numpy as np
import pytest

from mobile_peft.core import perf_model as perf
from mobile_peft.runtime.bundle import Bundle
from mobile_peft.runtime.trainer import TrainOptions, train_bundle


def _hydra_rank_like(src, dst):
    """A copy of the tiny bundle as a hydra-rank export would look: one phase below r_max and a
    fitted performance model (the manifest is not checksummed; the artifacts are untouched)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    schedule = manifest["rank_schedule"]
    first = {m: {"lora": 2 if m.endswith("v_proj") else 3} for m in schedule["modules"]}
    schedule["phases"] = [{"start_step": 0, "ranks": first}]
    schedule["allocator"] = "hydra-rank"
    schedule["budget_params"] = sum(r["lora"] * schedule["modules"][m]["slots"]["lora"]["params_per_rank"] for m, r in first.items())
    manifest["performance_model"] = {"kind": perf.MODEL_KIND, "version": perf.MODEL_VERSION, "feature_names": list(perf.FEATURES),
                                     "weights": [-0.5, -0.5, -0.5, -2.0, -0.5, 1.5], "intercept": 3.0, "min_rank": 1}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_on_device_realloc_keeps_the_budget_and_logs_changes(fmt, request, tmp_path):
    bundle_dir = _hydra_rank_like(request.getfixturevalue(f"{fmt}_bundle"), tmp_path / "bundle")
    bundle = Bundle.open(bundle_dir)
    schedule = bundle.schedule
    report = train_bundle(bundle, tmp_path / "run", TrainOptions(steps=12, data="digits:next-digit", checkpoint_every=6,
                                                                on_device_realloc=True, realloc_every=3))
    reallocs = [e for e in report.events if e["kind"] == "realloc"]
    assert [e["step"] for e in reallocs] == [3, 6, 9]
    for event in reallocs:
        assert event["params"] <= schedule.budget_params * 1.01
    applied = [e for e in reallocs if e["applied"]]
    assert applied, "the model should move ranks towards the language attention units with the largest signals"
    final = json.loads((tmp_path / "run" / "train_log.json").read_text())["final_ranks"]
    assert schedule.params(final) <= schedule.budget_params * 1.01
    assert final != schedule.ranks(0)
    # the exported adapter holds exactly the final active ranks
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    for module, slots in final.items():
        rel = module.removeprefix("language_model.")
        assert tensors[f"base_model.model.{rel}.lora_A.weight"].shape[0] == slots["lora"]
    assert np.isfinite(report.losses).all()


def test_realloc_run_resumes_to_the_same_ranks_and_tensors(pte_bundle, tmp_path):
    from safetensors.numpy import load_file

    bundle_dir = _hydra_rank_like(pte_bundle, tmp_path / "bundle")
    opts = TrainOptions(steps=12, data="digits:next-digit", checkpoint_every=3, on_device_realloc=True, realloc_every=3)
    reference = train_bundle(bundle_dir, tmp_path / "reference", opts)

    class Crash(Exception):
        pass

    def crash_at_8(step, loss):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        train_bundle(bundle_dir, tmp_path / "crashed", opts, on_step=crash_at_8)
    resumed = train_bundle(bundle_dir, tmp_path / "crashed", opts, resume=True)
    assert resumed.resumed_from == 6 and resumed.events == reference.events
    ref = load_file(str(tmp_path / "reference" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "crashed" / "adapter_model.safetensors"))
    assert set(ref) == set(got)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], atol=1e-6)
