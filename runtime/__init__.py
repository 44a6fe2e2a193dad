"""The reference on-device trainer and memory profiler. Installed as mobile_peft.runtime.

What a phone does with a bundle, using only the torch-free core (:mod:`mobile_peft.core`: the
manifest, the encoder, the data readers, the re-allocation decision, the adapter writer), numpy,
the tokeniser and the format's runtime (ExecuTorch or ONNX Runtime training) -- never the
authoring layer or torch autograd:

* :func:`train_bundle` -- train, apply the rank schedule (and on-device re-allocation), checkpoint
  atomically, resume, write the personal adapter;
* :func:`evaluate_bundle` -- accuracy with the bundle's eval method;
* :func:`profile_bundle` -- planned vs measured memory and step time against a device's budget.

Importing it loads no runtime library: the engines import ExecuTorch / ONNX Runtime when built.
"""

from __future__ import annotations

from .bundle import Bundle
from .demo import runtime_demo
from .evaluate import evaluate_bundle
from .profile import profile_bundle
from .trainer import TrainOptions, train_bundle

__all__ = ["Bundle", "TrainOptions", "evaluate_bundle", "profile_bundle", "runtime_demo", "train_bundle"]
