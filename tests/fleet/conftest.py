"""The fleet tests train the runtime tests' cached tiny onnx bundle (LoRA r_max 4 on q/v, batch 4)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobile_peft.core.manifest import Trainable
from mobile_peft.fleet.updates import Layout


def _runtime_bundles():
    path = Path(__file__).resolve().parents[1] / "runtime" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_fleet_runtime_bundles", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fleet_bundle(request, tmp_path_factory) -> Path:
    """A private copy (the shared cache is re-exported when the SDK's sources change)."""
    pytest.importorskip("onnxruntime.training")
    pytest.importorskip("flwr")
    cached = _runtime_bundles()._cached_bundle(request, "onnx")
    return Path(shutil.copytree(cached, tmp_path_factory.mktemp("fleet") / "bundle"))


@pytest.fixture
def layout() -> Layout:
    """Two slots: r_max 4, fan_in 6 / fan_out 5, and r_max 3, fan_in 4 / fan_out 3."""
    rows = []
    for module, r, fan_in, fan_out in (("m.q", 4, 6, 5), ("m.v", 3, 4, 3)):
        rows.append(Trainable(f"{module}.A", module, "lora", "down", "lora_A", (r, fan_in)))
        rows.append(Trainable(f"{module}.B", module, "lora", "up", "lora_B", (fan_out, r)))
    return Layout.from_trainable(rows)


def random_params(layout: Layout, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for pair in layout.pairs.values():
        for t in pair.values():
            out[t.name] = rng.normal(size=t.shape).astype(np.float32)
    return out
