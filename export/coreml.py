"""Core ML export (iOS): a frozen quantised feature extractor + a small updatable classifier head.

Core ML cannot train adapters inside a backbone: only NeuralNetwork models are updatable on device
(``MLUpdateTask``), only their inner-product / convolution layers, in fp32, and ML Program models
not at all. So the honest iOS path is head-only personalisation:

* :data:`~.contract.COREML_BACKBONE_FILE`: ML Program of the frozen model (vision tower,
  projector, language model; adapters are *merged* in, so an SDK-trained adapter is kept),
  weights linearly quantised (int8, or int4 per block for an int4 backbone). Inputs
  ``pixel_values [1,3,S,S]`` f32 and ``input_ids [1,T]`` int32 (``<bos>`` prompt, right-padded,
  no answer); output ``features [1,D]``: the decoder's last hidden state at the last prompt token,
  the position whose logits predict the answer.
* :data:`~.contract.COREML_HEAD_FILE`: updatable NeuralNetwork ``features -> inner product
  [K x D] -> softmax -> answer_probs`` over a fixed answer vocabulary of K answers, with
  categorical cross-entropy and SGD (learning rate, batch size, epochs). It starts from the
  language model's ``lm_head`` rows of each answer's first token, so before any update it ranks
  answers as the frozen model does.

Trade-off versus ExecuTorch / ONNX Runtime on iOS: those train the rank-scheduled adapters inside
every layer (more capacity, rank schedules apply) but need the C++/Objective-C++ runtime in the
app; Core ML is the system framework (no runtime to ship, Neural Engine for the backbone) but
learns only a linear head over a closed answer set, and rank schedules do not apply to it.

Linux can convert, quantise and check specs; prediction and on-device updates need macOS/iOS.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobile_peft.adapters import adapter_layers
from mobile_peft.core import contract
from mobile_peft.core.contract import MethodKey
from mobile_peft.core.errors import ConfigError, MissingExtraError
from mobile_peft.data import DIGIT_NAMES, special_token_ids
from mobile_peft.quant import linear_weight

__all__ = ["FeatureExtractor", "build_head", "convert_backbone", "export_coreml"]

logger = logging.getLogger(__name__)


def _require_coremltools() -> Any:
    try:
        import coremltools
    except ImportError:
        raise MissingExtraError("coremltools", "coreml", "Exporting a Core ML bundle") from None
    return coremltools


class FeatureExtractor(nn.Module):
    """``(pixel_values [1,3,S,S], input_ids [1,T]) -> features [1,D]`` at the last prompt token."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.long()
        model = self.model
        image = model.encode_images(pixel_values)
        text = model.language_model.get_input_embeddings()(ids)
        embeds = torch.cat([image.to(text.dtype), text], dim=1)
        length = embeds.shape[1]
        hidden = model.language_model.model(
            inputs_embeds=embeds,
            attention_mask=model.causal_mask[:, :, :length, :length],
            position_ids=model.position_ids[:, :length],
        ).last_hidden_state  # [1, N + T, D]
        last = (ids != self.pad_id).sum(dim=1, keepdim=True) - 1 + model.num_image_tokens  # [1, 1]
        # a one-hot weighted sum instead of gather: Core ML's converter turns the index into fp32
        pick = (model.position_ids[:, :length] == last).to(hidden.dtype)  # [1, N + T]
        return (hidden * pick[..., None]).sum(dim=1)


def _merged_copy(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for layer in adapter_layers(model).values():
        layer.merge()
    return model.eval()


def _drop_aliases(ep: torch.export.ExportedProgram) -> None:
    """``aten.alias`` (no-op views left by decomposition) has no Core ML converter: bypass it."""
    graph = ep.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (
            torch.ops.aten.alias.default,
            torch.ops.aten.alias_copy.default,
        ):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    ep.graph_module.recompile()


def _pipeline(ct: Any) -> Any:
    """The default pipeline without const de-duplication: it merges equal constants of unrelated
    ops (e.g. every all-zero bias of a fresh model, shared by a layer_norm and a linear), and the
    per-op-type quantisation config below then refuses the shared constant ("compression config
    conflict detected between ops")."""
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::const_deduplication"])
    return pipeline


def convert_backbone(model: nn.Module, pad_id: int, path: Path, nbits: int = 8) -> Any:
    """torch.export -> ML Program -> linear weight quantisation; saved to ``path``."""
    ct = _require_coremltools()
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    spec = model.config.input_spec
    extractor = FeatureExtractor(_merged_copy(model), pad_id).eval()
    pixels = torch.zeros(1, 3, spec.image_size, spec.image_size)
    ids = torch.full((1, spec.max_text_len), pad_id, dtype=torch.int32)
    ids[0, :2] = 1
    with torch.no_grad():
        ep = torch.export.export(extractor, (pixels, ids), strict=False).run_decompositions({})
    _drop_aliases(ep)
    mlmodel = ct.convert(
        ep,
        inputs=[
            ct.TensorType(name=contract.INPUT_PIXEL_VALUES, shape=pixels.shape),
            ct.TensorType(name=contract.INPUT_IDS, shape=ids.shape, dtype=int),
        ],
        outputs=[ct.TensorType(name=contract.COREML_FEATURES)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        pass_pipeline=_pipeline(ct),
    )
    if nbits == 4:
        op = OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32
        )
    else:
        op = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    # Only weights of linear/matmul/conv ops: a global config would also "quantise" constants such
    # as the causal mask (finfo.min entries), breaking it.
    config = OptimizationConfig(op_type_configs={"linear": op, "matmul": op, "conv": op})
    mlmodel = linear_quantize_weights(mlmodel, config)
    mlmodel.save(str(path))
    return mlmodel


def build_head(
    weight: torch.Tensor,
    bias: torch.Tensor,
    answers: list[str],
    path: Path,
    lr: float,
    batch_size: int,
    epochs: int = 10,
) -> Any:
    """Updatable NeuralNetwork classifier ``features [D] -> answer_probs [K]`` (fp32)."""
    ct = _require_coremltools()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder, SgdParams

    k, d = weight.shape
    builder = NeuralNetworkBuilder(
        [(contract.COREML_FEATURES, datatypes.Array(d))],
        [(contract.COREML_HEAD_OUTPUT, datatypes.Array(k))],
        mode="classifier",
    )
    builder.add_inner_product(
        "head",
        W=weight.detach().double().numpy(),
        b=bias.detach().double().numpy(),
        input_channels=d,
        output_channels=k,
        has_bias=True,
        input_name=contract.COREML_FEATURES,
        output_name="head_logits",
    )
    builder.add_softmax("softmax", input_name="head_logits", output_name=contract.COREML_HEAD_OUTPUT)
    builder.set_class_labels(
        answers,
        predicted_feature_name=contract.COREML_HEAD_LABEL,
        prediction_blob=contract.COREML_HEAD_OUTPUT,
    )
    builder.make_updatable(["head"])
    builder.set_categorical_cross_entropy_loss(name="loss", input=contract.COREML_HEAD_OUTPUT)
    builder.set_sgd_optimizer(SgdParams(lr=lr, batch=batch_size))
    builder.set_epochs(epochs)
    spec = builder.spec
    spec.description.trainingInput[0].shortDescription = "answer features"
    ct.models.utils.save_spec(spec, str(path))
    return spec


def _answer_head_init(
    model: nn.Module, tokenizer: Any, answers: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lm_head`` rows of each answer's first token (so the head starts as the frozen LM)."""
    first = []
    for answer in answers:
        ids = tokenizer.encode(answer, add_special_tokens=False).ids
        if not ids:
            raise ConfigError(
                f"answer {answer!r} encodes to no tokens; the Core ML head needs a token per answer."
            )
        first.append(ids[0])
    if len(set(first)) != len(first):
        logger.warning("some answers share their first token; their head rows start equal")
    with torch.no_grad():
        weight = linear_weight(model.language_model.lm_head)[first].float().clone()
        bias = torch.zeros(len(answers))
        lm_bias = getattr(model.language_model.lm_head, "bias", None)
        if lm_bias is not None:
            bias = lm_bias[first].float().clone()
    return weight, bias


def export_coreml(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    answers: list[str] | None = None,
    lr: float = 1e-2,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Write the backbone ML Program and the updatable head; returns what the manifest records."""
    ct = _require_coremltools()
    out_dir = Path(out_dir)
    answers = list(answers or DIGIT_NAMES)
    pad_id = special_token_ids(tokenizer, model.config.input_spec)[0]
    nbits = 4 if model.config.quant == "int4" else 8
    convert_backbone(model, pad_id, out_dir / contract.COREML_BACKBONE_FILE, nbits)
    weight, bias = _answer_head_init(model, tokenizer, answers)
    spec = build_head(weight, bias, answers, out_dir / contract.COREML_HEAD_FILE, lr, batch_size)
    spec_in = model.config.input_spec
    methods = {
        MethodKey.BACKBONE: {
            MethodKey.FILE: contract.COREML_BACKBONE_FILE,
            "type": "mlprogram",
            "weights": f"int{nbits}",
            "inputs": [
                {
                    "name": contract.INPUT_PIXEL_VALUES,
                    "shape": [1, 3, spec_in.image_size, spec_in.image_size],
                    "dtype": "float32",
                },
                {"name": contract.INPUT_IDS, "shape": [1, spec_in.max_text_len], "dtype": "int32"},
            ],
            "outputs": [{"name": contract.COREML_FEATURES, "shape": [1, int(weight.shape[1])]}],
        },
        MethodKey.HEAD: {
            MethodKey.FILE: contract.COREML_HEAD_FILE,
            "type": "neuralnetwork",
            "updatable": bool(spec.isUpdatable),
            MethodKey.INPUT: contract.COREML_FEATURES,
            MethodKey.OUTPUT: contract.COREML_HEAD_OUTPUT,
            MethodKey.LABEL: contract.COREML_HEAD_LABEL,
            MethodKey.ANSWERS: answers,
            "loss": "categorical_cross_entropy",
            "optimizer": {"name": "sgd", "lr": lr, "batch": batch_size},
        },
        "coremltools_version": ct.__version__,
        "note": "head-only personalisation with MLUpdateTask; adapters are merged into the frozen backbone",
    }
    return {"files": [contract.COREML_BACKBONE_FILE, contract.COREML_HEAD_FILE], "methods": methods}
