"""The benchmarks' bundle cache: a pte bundle is keyed on how it was exported."""

from __future__ import annotations

from mobile_peft.bench._cache import bundle_path, is_exported
from mobile_peft.core.contract import MANIFEST_FILE
from mobile_peft.export import PteOptions


def test_pte_bundles_are_keyed_on_their_export_options(tmp_path):
    default = bundle_path(tmp_path, "tiny-b8", "pte")
    assert default == bundle_path(tmp_path, "tiny-b8", "pte", PteOptions())
    assert default.name == f"tiny-b8-pte-{PteOptions().fingerprint()}"
    flip = {name: not getattr(PteOptions(), name) for name in
            ("xnnpack", "rewrites", "recompute_frozen", "recompute_activations", "keep_order")}
    changed = {bundle_path(tmp_path, "tiny-b8", "pte", PteOptions(**{name: value})) for name, value in flip.items()}
    changed.add(bundle_path(tmp_path, "tiny-b8", "pte", PteOptions(xnnpack_ops=("LinearConfig",))))
    assert len(changed) == 6 and default not in changed
    assert bundle_path(tmp_path, "tiny-b8", "onnx") == tmp_path / "tiny-b8-onnx"  # no pte options there


def test_a_bundle_counts_as_exported_once_its_manifest_is_written(tmp_path):
    path = bundle_path(tmp_path, "tiny-b8", "onnx")
    path.mkdir()
    (path / "model.onnx").write_bytes(b"partial")
    assert not is_exported(path)
    (path / MANIFEST_FILE).write_text("{}")
    assert is_exported(path)
