"""Core ML bundle: what Linux can check (conversion, spec checks, isUpdatable, layer shapes)."""

from __future__ import annotations

import pytest

from mobile_peft.data import DIGIT_NAMES

pytest.importorskip("coremltools")

from mobile_peft.core import contract  # noqa: E402
from mobile_peft.core.manifest import validate_bundle  # noqa: E402
from mobile_peft.export import export_bundle  # noqa: E402


@pytest.fixture(scope="module")
def coreml_bundle(lora_model, tmp_path_factory):
    return export_bundle(lora_model, "coreml", tmp_path_factory.mktemp("coreml") / "bundle", batch_size=2)


def test_head_is_updatable_classifier(coreml_bundle):
    import coremltools as ct

    spec = ct.utils.load_spec(str(coreml_bundle.path / contract.COREML_HEAD_FILE))
    assert spec.isUpdatable and spec.WhichOneof("Type") == "neuralNetworkClassifier"
    layers = {layer.name: layer for layer in spec.neuralNetworkClassifier.layers}
    head = layers["head"]
    assert head.isUpdatable
    hidden = coreml_bundle.manifest["model"]["config"]["text"]["hidden_size"]
    assert (head.innerProduct.outputChannels, head.innerProduct.inputChannels) == (len(DIGIT_NAMES), hidden)
    params = spec.neuralNetworkClassifier.updateParams
    assert params.lossLayers[0].categoricalCrossEntropyLossLayer.input == contract.COREML_HEAD_OUTPUT
    assert params.optimizer.sgdOptimizer.learningRate.defaultValue > 0
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == list(DIGIT_NAMES)


def test_backbone_is_quantised_ml_program(coreml_bundle):
    import coremltools as ct

    manifest = validate_bundle(coreml_bundle.path)
    model = ct.models.MLModel(str(coreml_bundle.path / contract.COREML_BACKBONE_FILE), skip_model_load=True)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == [contract.INPUT_PIXEL_VALUES, contract.INPUT_IDS]
    assert [o.name for o in spec.description.output] == [contract.COREML_FEATURES]
    ops = {op.type for f in spec.mlProgram.functions.values() for block in f.block_specializations.values() for op in block.operations}
    assert ops & {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"}, sorted(ops)
    assert manifest.methods["head"]["updatable"] is True


def test_head_trains_at_the_exported_lr_and_batch(lora_model, tmp_path):
    """`--lr` and `--batch-size` reach the updatable head (they used to be dropped: 0.01 / 8)."""
    import coremltools as ct

    result = export_bundle(lora_model, "coreml", tmp_path / "b", lr=0.05, batch_size=4)
    params = ct.utils.load_spec(str(result.path / contract.COREML_HEAD_FILE)).neuralNetworkClassifier.updateParams
    assert params.optimizer.sgdOptimizer.learningRate.defaultValue == pytest.approx(0.05)
    assert params.optimizer.sgdOptimizer.miniBatchSize.defaultValue == 4
    assert result.manifest["methods"]["head"]["optimizer"] == {"name": "sgd", "lr": 0.05, "batch": 4}
    assert result.manifest["optimizer"]["lr"] == 0.05
