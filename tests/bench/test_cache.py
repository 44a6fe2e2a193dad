"""The benchmarks' bundle cache: a bundle is keyed on the exporter's code and, for pte, its options."""

from __future__ import annotations

from mobile_peft.bench._cache import bundle_path, is_exported
from mobile_peft.core.contract import MANIFEST_FILE
from mobile_peft.export import PteOptions


def test_pte_bundles_are_keyed_on_their_export_options(tmp_path):
    default = bundle_path(tmp_path, "tiny-b8", "pte")
    assert default == bundle_path(tmp_path, "tiny-b8", "pte", PteOptions())
    assert default.name.startswith("tiny-b8-pte-")
    flip = {name: not getattr(PteOptions(), name) for name in
            ("xnnpack", "rewrites", "recompute_frozen", "recompute_activations", "keep_order")}
    changed = {bundle_path(tmp_path, "tiny-b8", "pte", PteOptions(**{name: value})) for name, value in flip.items()}
    changed.add(bundle_path(tmp_path, "tiny-b8", "pte", PteOptions(xnnpack_ops=("LinearConfig",))))
    assert len(changed) == 6 and default not in changed
    onnx = bundle_path(tmp_path, "tiny-b8", "onnx")
    assert onnx == bundle_path(tmp_path, "tiny-b8", "onnx", PteOptions(xnnpack=False))  # no pte options there
    assert onnx.parent == tmp_path and onnx.name.startswith("tiny-b8-onnx-")


def test_bundles_are_keyed_on_the_exporter_code(tmp_path, monkeypatch):
    from mobile_peft.bench import _cache

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    first = _cache.code_digest([package])
    (package / "notes.txt").write_text("still not code")
    assert _cache.code_digest([package]) == first
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert _cache.code_digest([package]) != first

    before = {fmt: bundle_path(tmp_path, "tiny-b8", fmt) for fmt in ("pte", "onnx")}
    monkeypatch.setattr(_cache, "exporter_digest", lambda: "an edited exporter")
    assert all(bundle_path(tmp_path, "tiny-b8", fmt) != path for fmt, path in before.items())


def test_a_bundle_counts_as_exported_once_its_manifest_is_written(tmp_path):
    path = bundle_path(tmp_path, "tiny-b8", "onnx")
    path.mkdir()
    (path / "model.onnx").write_bytes(b"partial")
    assert not is_exported(path)
    (path / MANIFEST_FILE).write_text("{}")
    assert is_exported(path)


def test_workload_target_sets_leave_the_vision_tower_frozen_or_not():
    from mobile_peft.adapters import adapter_layers
    from mobile_peft.bench._cache import workload_model

    default = list(adapter_layers(workload_model("tiny", "lora", "default", "int8", 2)[0]))
    language = list(adapter_layers(workload_model("tiny", "lora", "language+projector", "int8", 2)[0]))
    assert any(n.startswith("vision") for n in default) and not any(n.startswith("vision") for n in language)
    assert any(n.startswith("projector") for n in language) and any(n.startswith("language_model") for n in language)
    assert set(language) < set(default)


def test_workloads_export_once_per_target_set_and_format(tmp_path, monkeypatch):
    """speed and memory share the cache: a second call (either benchmark) exports nothing."""
    import mobile_peft.export as export
    from mobile_peft.bench._cache import workload_bundles

    exported = []

    def fake_export(model, fmt, path, batch_size, seed):
        exported.append((path.name, fmt, batch_size))
        path.mkdir(parents=True)
        (path / MANIFEST_FILE).write_text("{}")

    monkeypatch.setattr(export, "export_bundle", fake_export)
    args = (tmp_path, "tiny", "lora", "language+projector", "int8", 8, 1)
    first = workload_bundles(*args, ("onnx",), model=object())
    assert [(name.rsplit("-", 1)[0], *rest) for name, *rest in exported] == [
        ("tiny-int8-lora-r8-language-projector-b1-onnx", "onnx", 1)
    ]
    assert workload_bundles(*args, ("onnx",), model=object()) == first and len(exported) == 1
    workload_bundles(tmp_path, "tiny", "lora", "default", "int8", 8, 1, ("onnx",), model=object())
    assert len(exported) == 2 and exported[1][0].startswith("tiny-int8-lora-r8-default-b1-onnx-")


def test_speed_bench_refuses_an_unknown_target_set(tmp_path):
    import pytest

    from mobile_peft.bench.speed import SpeedBenchConfig, run_speed_bench
    from mobile_peft.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown target set\(s\) \['vision'\].*language\+projector"):
        run_speed_bench(SpeedBenchConfig(targets=("vision",), work_dir=str(tmp_path)))
