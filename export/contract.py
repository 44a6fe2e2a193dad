"""The contract between the SDK and the phone: file names, manifest keys, method names, input and
tensor naming, schema version. Plain constants and string functions only (no torch import), so the
demo apps' build scripts and tests can read the very same names.

A bundle is a directory (or a ``.zip`` of one) holding :data:`MANIFEST_FILE` plus the artifacts of
one format:

* ``pte``: :data:`PTE_FILE` (methods :data:`METHOD_TRAIN` = joint forward+backward, loss output 0;
  :data:`METHOD_EVAL` = inference) + :data:`PTD_FILE` (the trainable adapter tensors only);
* ``onnx``: :data:`ONNX_TRAINING_FILE`, :data:`ONNX_EVAL_FILE`, :data:`ONNX_OPTIMIZER_FILE`,
  :data:`ONNX_CHECKPOINT_FILE` (ONNX Runtime training artifacts; outputs loss, logits);
  :data:`ONNX_INFERENCE_FILE` is what a trained state exports to (not shipped);
* ``coreml``: :data:`COREML_BACKBONE_FILE` (frozen quantised ML Program producing features) +
  :data:`COREML_HEAD_FILE` (updatable NeuralNetwork classifier head).

Every bundle also carries the tokeniser (:data:`TOKENIZER_FILE`).

Inputs of the training and eval graphs, in order: :data:`INPUT_PIXEL_VALUES`,
:data:`INPUT_IDS`, :data:`INPUT_LABELS`, then one rank mask per adapter slot in the order of the
manifest's ``rank_schedule.masks`` list (named by :func:`mask_input_name`). The ``pte`` eval method
additionally takes the trainable tensors (manifest ``trainable`` order) after the masks, so it
always sees the weights the phone is training.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
SCHEMA_NAME = "mobile-peft/bundle"
SUPPORTED_SCHEMA_VERSIONS = (1,)

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"

FORMAT_PTE = "pte"
FORMAT_ONNX = "onnx"
FORMAT_COREML = "coreml"
FORMATS = (FORMAT_PTE, FORMAT_ONNX, FORMAT_COREML)

# -- ExecuTorch ---------------------------------------------------------------------------------
PTE_FILE = "model.pte"
PTD_FILE = "adapters.ptd"
METHOD_TRAIN = "forward"  # the joint graph; ExecuTorch's training API looks methods up by name
METHOD_EVAL = "eval"
# Index methods ExecuTorch emits beside a joint graph (suffix: the method name).
ET_GRADIENTS_INDEX_PREFIX = "__et_training_gradients_index_"
ET_PARAMETERS_INDEX_PREFIX = "__et_training_parameters_index_"
ET_FQN_PREFIX = "__et_training_fqn_"

# -- ONNX Runtime training ----------------------------------------------------------------------
ONNX_TRAINING_FILE = "training_model.onnx"
ONNX_EVAL_FILE = "eval_model.onnx"
ONNX_OPTIMIZER_FILE = "optimizer_model.onnx"
ONNX_CHECKPOINT_FILE = "checkpoint"
ONNX_INFERENCE_FILE = "inference_model.onnx"
# The name generate_artifacts gives a LossType loss block's output. Our bundles add no loss block:
# their loss output is OUTPUT_LOSS. Kept only because the demo apps mirror it as a fallback name;
# drop it here and in both apps' Contract files together.
ONNX_LOSS_OUTPUT = "onnx::loss::1"
ONNX_IR_VERSION = 10  # the highest IR version ONNX Runtime 1.19 loads
ONNX_OPSET = 15  # opset 17 breaks ORT's gradient builder (DESIGN.md)

# -- Core ML ------------------------------------------------------------------------------------
COREML_BACKBONE_FILE = "backbone.mlpackage"
COREML_HEAD_FILE = "head.mlmodel"
COREML_FEATURES = "features"
COREML_HEAD_OUTPUT = "answer_probs"
COREML_HEAD_LABEL = "answer"

# -- graph inputs / outputs ---------------------------------------------------------------------
INPUT_PIXEL_VALUES = "pixel_values"
INPUT_IDS = "input_ids"
INPUT_LABELS = "labels"
OUTPUT_LOSS = "loss"
OUTPUT_LOGITS = "logits"
MASK_SUFFIX = "_rank_mask"


def mask_input_name(module: str, slot: str) -> str:
    """Graph input name of the rank mask of ``slot`` in adapter ``module`` (its buffer's name)."""
    return f"{module}.{slot}{MASK_SUFFIX}"


# -- manifest keys ------------------------------------------------------------------------------
class Key:
    """Top-level manifest keys (required unless noted)."""

    SCHEMA = "schema"
    SCHEMA_VERSION = "schema_version"
    FORMAT = "format"
    SDK_VERSION = "sdk_version"
    MODEL = "model"
    INPUT_SPEC = "input_spec"
    METHODS = "methods"
    TRAINABLE = "trainable"
    RANK_SCHEDULE = "rank_schedule"
    PERFORMANCE_MODEL = "performance_model"
    OPTIMIZER = "optimizer"
    BACKBONE = "backbone"
    FILES = "files"


REQUIRED_KEYS = (
    Key.SCHEMA,
    Key.SCHEMA_VERSION,
    Key.FORMAT,
    Key.SDK_VERSION,
    Key.MODEL,
    Key.INPUT_SPEC,
    Key.METHODS,
    Key.TRAINABLE,
    Key.RANK_SCHEDULE,
    Key.PERFORMANCE_MODEL,
    Key.OPTIMIZER,
    Key.BACKBONE,
    Key.FILES,
)

# Keys inside sections (the ones a phone reads).
MODEL_KEYS = ("name", "quant", "parameters", "num_image_tokens", "vocab_size")
INPUT_SPEC_KEYS = (
    "image_size",
    "image_mean",
    "image_std",
    "prompt_template",
    "max_text_len",
    "sequence_length",
    "batch_size",
    "token_ids",
    "tokenizer_file",
)
TRAINABLE_KEYS = ("name", "module", "slot", "shape", "dtype")
RANK_SCHEDULE_KEYS = ("allocator", "adapter", "budget_params", "modules", "phases", "masks")
FILE_KEYS = ("path", "sha256", "size")
OPTIMIZER_KEYS = ("name", "lr")
BACKBONE_KEYS = ("quant", "bytes_by_dtype", "total_bytes")
