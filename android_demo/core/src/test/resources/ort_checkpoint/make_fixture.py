"""Writes the ONNX Runtime checkpoint fixture of OrtCheckpointTest (run with the repository's .venv):

    .venv/bin/python android_demo/core/src/test/resources/ort_checkpoint/make_fixture.py

A tiny graph (x @ W + x @ F, MSE loss) with W trainable and F frozen goes through
onnxruntime-training 1.19.2's ``generate_artifacts``; one AdamW step; the checkpoint is saved with
the optimiser state (what the app saves), and ``expected.json`` holds the trainable tensors as ORT's
own ``CheckpointState`` reads them back.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.training import artifacts
from onnxruntime.training.api import CheckpointState, Module, Optimizer

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    f = rng.standard_normal((3, 2)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "model.w"], ["a"]),
            helper.make_node("MatMul", ["x", "model.frozen"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
        [numpy_helper.from_array(w, "model.w"), numpy_helper.from_array(f, "model.frozen")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        artifacts.generate_artifacts(
            model, requires_grad=["model.w"], frozen_params=["model.frozen"], loss=artifacts.LossType.MSELoss,
            optimizer=artifacts.OptimType.AdamW, artifact_directory=tmp,
        )
        for name in ("training_model.onnx", "optimizer_model.onnx"):  # ORT 1.19 loads IR <= 10
            m = onnx.load(f"{tmp}/{name}")
            m.ir_version = min(m.ir_version, 10)
            onnx.save(m, f"{tmp}/{name}")
        state = CheckpointState.load_checkpoint(f"{tmp}/checkpoint")
        module = Module(f"{tmp}/training_model.onnx", state)
        optimizer = Optimizer(f"{tmp}/optimizer_model.onnx", module)
        module.train()
        module(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32))
        optimizer.step()
        CheckpointState.save_checkpoint(state, str(HERE / "checkpoint"), include_optimizer_state=True)
    saved = CheckpointState.load_checkpoint(str(HERE / "checkpoint"))
    expected = {
        name: {"shape": list(np.asarray(p.data).shape), "values": np.asarray(p.data).ravel().tolist()}
        for name, p in saved.parameters
        if p.requires_grad
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
