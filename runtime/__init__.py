"""The reference on-device trainer and memory profiler. Installed as mobile_peft.runtime.

What a phone does with a bundle, using only the manifest, numpy, the tokeniser and the format's
runtime (ExecuTorch or ONNX Runtime training) -- never the authoring layer or torch autograd:

* :func:`train_bundle` -- train, apply the rank schedule (and on-device re-allocation), checkpoint
  atomically, resume, write the personal adapter;
* :func:`evaluate_bundle` -- accuracy with the bundle's eval method;
* :func:`profile_bundle` -- planned vs measured memory and step time against a device's budget.

Attributes load lazily so that importing the package loads no runtime library.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Bundle", "TrainOptions", "evaluate_bundle", "profile_bundle", "runtime_demo", "train_bundle"]

_WHERE = {
    "Bundle": "bundle",
    "TrainOptions": "trainer",
    "evaluate_bundle": "evaluate",
    "profile_bundle": "profile",
    "runtime_demo": "demo",
    "train_bundle": "trainer",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
