"""The contract between the SDK and the phone: file names, manifest keys and sub-keys, method
names, input and tensor naming, tensor roles, schema version. Plain constants and string functions
only, so the demo apps' contract files are generated from this module
(``python -m mobile_peft.core.codegen``) and a test proves they agree.

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
manifest's ``rank_schedule.mask_inputs`` list (named by :func:`mask_input_name`). The ``pte`` eval
method additionally takes the trainable tensors (manifest ``trainable`` order) after the masks, so
it always sees the weights the phone is training.

Every trainable tensor has a *role* (:data:`ROLE_DOWN` ``[r_max, fan_in]`` or :data:`ROLE_UP`
``[out, r_max]``) and a slot, recorded by the exporter from the adapter protocol: nothing reads a
role from a tensor's name.
"""

from __future__ import annotations

SCHEMA_VERSION = 2
SCHEMA_NAME = "mobile-peft/bundle"
SUPPORTED_SCHEMA_VERSIONS = (2,)

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"

FORMAT_PTE = "pte"
FORMAT_ONNX = "onnx"
FORMAT_COREML = "coreml"
FORMATS = (FORMAT_PTE, FORMAT_ONNX, FORMAT_COREML)

# How the frozen backbone's linear weights are stored (the manifest's backbone.quant).
QUANT_MODES = ("none", "int8", "int4")

# Adapter methods a bundle can carry (the manifest's rank_schedule.adapter) and their PEFT type.
ADAPTER_LORA = "lora"
ADAPTER_HYDRA = "hydra"
ADAPTER_METHODS = (ADAPTER_LORA, ADAPTER_HYDRA)
PEFT_TYPES = {ADAPTER_LORA: "LORA", ADAPTER_HYDRA: "HYDRA"}
# Rank slots of each method, and the parameter names of each slot's (down, up) tensors.
SLOTS = {ADAPTER_LORA: ("lora",), ADAPTER_HYDRA: ("parallel", "sequential")}
SLOT_PARAMS = {
    "lora": ("lora_A", "lora_B"),
    "parallel": ("parallel_down", "parallel_up"),
    "sequential": ("sequential_down", "sequential_up"),
}

# Roles of trainable tensors.
ROLE_DOWN = "down"
ROLE_UP = "up"
ROLES = (ROLE_DOWN, ROLE_UP)

# Label value that carries no loss (prompt, padding).
IGNORE_INDEX = -100

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
TRAINABLE_PREFIX = "model."  # trainable tensor names in the graphs: the wrappers hold the model as `model`


def mask_input_name(module: str, slot: str) -> str:
    """Graph input name of the rank mask of ``slot`` in adapter ``module`` (its buffer's name)."""
    return f"{module}.{slot}{MASK_SUFFIX}"


# -- manifest keys ------------------------------------------------------------------------------
class Key:
    """Top-level manifest keys (all required but those in ``OPTIONAL_SECTIONS``)."""

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
    MEMORY_BOUND = "memory_bound"  # optional: bundles written before it stay valid


class ModelKey:
    NAME = "name"
    QUANT = "quant"
    PARAMETERS = "parameters"
    NUM_IMAGE_TOKENS = "num_image_tokens"
    VOCAB_SIZE = "vocab_size"
    ADAPTER = "adapter"
    CONFIG = "config"


class InputSpecKey:
    IMAGE_SIZE = "image_size"
    IMAGE_MEAN = "image_mean"
    IMAGE_STD = "image_std"
    PROMPT_TEMPLATE = "prompt_template"
    MAX_TEXT_LEN = "max_text_len"
    PAD_TOKEN = "pad_token"
    BOS_TOKEN = "bos_token"
    EOS_TOKEN = "eos_token"
    LOWERCASE = "lowercase"
    SEQUENCE_LENGTH = "sequence_length"
    BATCH_SIZE = "batch_size"
    TOKEN_IDS = "token_ids"
    TOKENIZER_FILE = "tokenizer_file"


class TokenIdKey:
    PAD = "pad"
    BOS = "bos"
    EOS = "eos"
    IGNORE_INDEX = "ignore_index"


class TrainableKey:
    NAME = "name"
    MODULE = "module"
    SLOT = "slot"
    ROLE = "role"
    PARAM = "param"
    SHAPE = "shape"
    DTYPE = "dtype"


class ScheduleKey:
    SCHEMA = "schema"
    VERSION = "version"
    ALLOCATOR = "allocator"
    ADAPTER = "adapter"
    BUDGET_PARAMS = "budget_params"
    DROPOUT = "dropout"
    MODULES = "modules"
    SLOTS = "slots"
    PHASES = "phases"
    MASK_INPUTS = "mask_inputs"
    PERFORMANCE_MODEL = "performance_model"


class SlotKey:
    R_MAX = "r_max"
    PARAMS_PER_RANK = "params_per_rank"
    SCALE = "scale"


class PhaseKey:
    START_STEP = "start_step"
    RANKS = "ranks"
    MASKS = "masks"  # optional soft mask values per module/slot


class MaskInputKey:
    MODULE = "module"
    SLOT = "slot"
    R_MAX = "r_max"
    INPUT = "input"


class MethodKey:
    """Keys of the manifest's ``methods`` section (which apply depends on the format)."""

    # pte
    TRAIN = "train"
    EVAL = "eval"
    METHOD = "method"
    INPUTS = "inputs"
    OUTPUTS = "outputs"
    GRADIENTS_INDEX_METHOD = "gradients_index_method"
    PARAMETERS_INDEX_METHOD = "parameters_index_method"
    FQN_METHOD = "fqn_method"
    PROGRAM = "program"
    TRAINABLE_DATA = "trainable_data"
    # onnx
    TRAIN_INPUTS = "train_inputs"
    TRAINING_MODEL = "training_model"
    EVAL_MODEL = "eval_model"
    OPTIMIZER_MODEL = "optimizer_model"
    CHECKPOINT = "checkpoint"
    # coreml
    BACKBONE = "backbone"
    HEAD = "head"
    FILE = "file"
    INPUT = "input"
    OUTPUT = "output"
    LABEL = "label"
    ANSWERS = "answers"


class TensorSpecKey:
    NAME = "name"
    SHAPE = "shape"
    DTYPE = "dtype"


class OptimizerKey:
    NAME = "name"
    LR = "lr"
    MOMENTUM = "momentum"
    BETAS = "betas"
    EPS = "eps"
    WEIGHT_DECAY = "weight_decay"
    BATCH = "batch"


class BackboneKey:
    QUANT = "quant"
    BYTES_BY_DTYPE = "bytes_by_dtype"
    TOTAL_BYTES = "total_bytes"


class MemoryBoundKey:
    """The optional ``memory_bound`` section: the training step's memory lower bound at the
    bundle's batch size, by term, written at export time (``export/memory_bound.py``).
    ``total_bytes = backbone_bytes + trainable_bytes + gradient_bytes + optimizer_state_bytes +
    activation_bytes``."""

    TOTAL_BYTES = "total_bytes"
    BACKBONE_BYTES = "backbone_bytes"  # the frozen weights as stored (quantised)
    TRAINABLE_BYTES = "trainable_bytes"  # the tensors the phone trains
    GRADIENT_BYTES = "gradient_bytes"  # one gradient per trainable tensor
    OPTIMIZER_STATE_BYTES = "optimizer_state_bytes"  # trainable_bytes x optimizer_states
    OPTIMIZER_STATES = "optimizer_states"  # state tensors per trainable tensor: SGD 0, momentum 1, AdamW 2
    ACTIVATION_BYTES = "activation_bytes"  # what the backward keeps (eager saved tensors, unique storages)
    BATCH_SIZE = "batch_size"
    COUNTED_BY = "counted_by"  # how the activations were counted


class FileKey:
    PATH = "path"
    SHA256 = "sha256"
    SIZE = "size"


def _values(cls: type) -> tuple[str, ...]:
    return tuple(v for k, v in vars(cls).items() if k.isupper())


OPTIONAL_SECTIONS = (Key.MEMORY_BOUND,)
REQUIRED_KEYS = tuple(k for k in _values(Key) if k not in OPTIONAL_SECTIONS)
# Required keys inside sections (the ones a phone reads).
MODEL_KEYS = (
    ModelKey.NAME,
    ModelKey.QUANT,
    ModelKey.PARAMETERS,
    ModelKey.NUM_IMAGE_TOKENS,
    ModelKey.VOCAB_SIZE,
)
INPUT_SPEC_KEYS = (
    InputSpecKey.IMAGE_SIZE,
    InputSpecKey.IMAGE_MEAN,
    InputSpecKey.IMAGE_STD,
    InputSpecKey.PROMPT_TEMPLATE,
    InputSpecKey.MAX_TEXT_LEN,
    InputSpecKey.LOWERCASE,
    InputSpecKey.SEQUENCE_LENGTH,
    InputSpecKey.BATCH_SIZE,
    InputSpecKey.TOKEN_IDS,
    InputSpecKey.TOKENIZER_FILE,
)
TOKEN_ID_KEYS = _values(TokenIdKey)
TRAINABLE_KEYS = _values(TrainableKey)
RANK_SCHEDULE_KEYS = (
    ScheduleKey.ALLOCATOR,
    ScheduleKey.ADAPTER,
    ScheduleKey.BUDGET_PARAMS,
    ScheduleKey.MODULES,
    ScheduleKey.PHASES,
)
BUNDLE_RANK_SCHEDULE_KEYS = (*RANK_SCHEDULE_KEYS, ScheduleKey.MASK_INPUTS)
SLOT_KEYS = _values(SlotKey)
PHASE_KEYS = (PhaseKey.START_STEP, PhaseKey.RANKS)
MASK_INPUT_KEYS = _values(MaskInputKey)
FILE_KEYS = _values(FileKey)
OPTIMIZER_KEYS = (OptimizerKey.NAME, OptimizerKey.LR)
BACKBONE_KEYS = _values(BackboneKey)
MEMORY_BOUND_KEYS = _values(MemoryBoundKey)
# Required keys of the methods section, per format.
METHOD_KEYS = {
    FORMAT_PTE: (MethodKey.TRAIN, MethodKey.EVAL, MethodKey.PROGRAM, MethodKey.TRAINABLE_DATA),
    FORMAT_ONNX: (
        MethodKey.TRAIN_INPUTS,
        MethodKey.TRAINING_MODEL,
        MethodKey.EVAL_MODEL,
        MethodKey.OPTIMIZER_MODEL,
        MethodKey.CHECKPOINT,
        MethodKey.OUTPUTS,
    ),
    FORMAT_COREML: (MethodKey.BACKBONE, MethodKey.HEAD),
}
PTE_TRAIN_METHOD_KEYS = (
    MethodKey.METHOD,
    MethodKey.INPUTS,
    MethodKey.OUTPUTS,
    MethodKey.GRADIENTS_INDEX_METHOD,
    MethodKey.PARAMETERS_INDEX_METHOD,
    MethodKey.FQN_METHOD,
)
PTE_EVAL_METHOD_KEYS = (MethodKey.METHOD, MethodKey.INPUTS, MethodKey.OUTPUTS)
