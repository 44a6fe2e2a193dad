package org.mobilepeft.demo

/**
 * The bundle contract, mirrored by hand from `export/contract.py` (the one place that owns it).
 *
 * Naming rule, checked by `tests/demo_apps/test_contract_mirror.py`:
 *  - a top-level constant keeps its Python name (`PTE_FILE`);
 *  - a manifest key `Key.X` becomes `KEY_X`;
 *  - an entry `v` of a section tuple `<SECTION>_KEYS` becomes `<SECTION>_<V upper-cased>`
 *    (`INPUT_SPEC_KEYS` entry "image_size" -> `INPUT_SPEC_IMAGE_SIZE`).
 * Every `const val` here must exist in the Python contract with the same value; change
 * `export/contract.py` first, then this file and `ios_demo/.../Contract.swift`.
 */
object Contract {
    // -- schema ---------------------------------------------------------------------------------
    const val SCHEMA_VERSION = 1
    const val SCHEMA_NAME = "mobile-peft/bundle"
    val SUPPORTED_SCHEMA_VERSIONS = intArrayOf(1)

    const val MANIFEST_FILE = "manifest.json"
    const val TOKENIZER_FILE = "tokenizer.json"

    const val FORMAT_PTE = "pte"
    const val FORMAT_ONNX = "onnx"
    const val FORMAT_COREML = "coreml"

    // -- ExecuTorch -----------------------------------------------------------------------------
    const val PTE_FILE = "model.pte"
    const val PTD_FILE = "adapters.ptd"
    const val METHOD_TRAIN = "forward"
    const val METHOD_EVAL = "eval"
    const val ET_GRADIENTS_INDEX_PREFIX = "__et_training_gradients_index_"
    const val ET_PARAMETERS_INDEX_PREFIX = "__et_training_parameters_index_"
    const val ET_FQN_PREFIX = "__et_training_fqn_"

    // -- ONNX Runtime training ------------------------------------------------------------------
    const val ONNX_TRAINING_FILE = "training_model.onnx"
    const val ONNX_EVAL_FILE = "eval_model.onnx"
    const val ONNX_OPTIMIZER_FILE = "optimizer_model.onnx"
    const val ONNX_CHECKPOINT_FILE = "checkpoint"
    const val ONNX_INFERENCE_FILE = "inference_model.onnx"
    const val ONNX_LOSS_OUTPUT = "onnx::loss::1"

    // -- Core ML (iOS only; kept so both apps mirror the same set) -------------------------------
    const val COREML_BACKBONE_FILE = "backbone.mlpackage"
    const val COREML_HEAD_FILE = "head.mlmodel"
    const val COREML_FEATURES = "features"
    const val COREML_HEAD_OUTPUT = "answer_probs"
    const val COREML_HEAD_LABEL = "answer"

    // -- graph inputs / outputs -----------------------------------------------------------------
    const val INPUT_PIXEL_VALUES = "pixel_values"
    const val INPUT_IDS = "input_ids"
    const val INPUT_LABELS = "labels"
    const val OUTPUT_LOSS = "loss"
    const val OUTPUT_LOGITS = "logits"
    const val MASK_SUFFIX = "_rank_mask"

    /** Graph input name of the rank mask of [slot] in adapter [module] (Python: `mask_input_name`). */
    fun maskInputName(module: String, slot: String): String = "${module}.${slot}${MASK_SUFFIX}"

    // -- manifest keys (Python: class Key) ------------------------------------------------------
    const val KEY_SCHEMA = "schema"
    const val KEY_SCHEMA_VERSION = "schema_version"
    const val KEY_FORMAT = "format"
    const val KEY_SDK_VERSION = "sdk_version"
    const val KEY_MODEL = "model"
    const val KEY_INPUT_SPEC = "input_spec"
    const val KEY_METHODS = "methods"
    const val KEY_TRAINABLE = "trainable"
    const val KEY_RANK_SCHEDULE = "rank_schedule"
    const val KEY_PERFORMANCE_MODEL = "performance_model"
    const val KEY_OPTIMIZER = "optimizer"
    const val KEY_BACKBONE = "backbone"
    const val KEY_FILES = "files"

    // -- keys inside sections (Python: <SECTION>_KEYS) -------------------------------------------
    const val MODEL_NAME = "name"
    const val MODEL_QUANT = "quant"
    const val MODEL_PARAMETERS = "parameters"
    const val MODEL_NUM_IMAGE_TOKENS = "num_image_tokens"
    const val MODEL_VOCAB_SIZE = "vocab_size"

    const val INPUT_SPEC_IMAGE_SIZE = "image_size"
    const val INPUT_SPEC_IMAGE_MEAN = "image_mean"
    const val INPUT_SPEC_IMAGE_STD = "image_std"
    const val INPUT_SPEC_PROMPT_TEMPLATE = "prompt_template"
    const val INPUT_SPEC_MAX_TEXT_LEN = "max_text_len"
    const val INPUT_SPEC_SEQUENCE_LENGTH = "sequence_length"
    const val INPUT_SPEC_BATCH_SIZE = "batch_size"
    const val INPUT_SPEC_TOKEN_IDS = "token_ids"
    const val INPUT_SPEC_TOKENIZER_FILE = "tokenizer_file"

    const val TRAINABLE_NAME = "name"
    const val TRAINABLE_MODULE = "module"
    const val TRAINABLE_SLOT = "slot"
    const val TRAINABLE_SHAPE = "shape"
    const val TRAINABLE_DTYPE = "dtype"

    const val RANK_SCHEDULE_ALLOCATOR = "allocator"
    const val RANK_SCHEDULE_ADAPTER = "adapter"
    const val RANK_SCHEDULE_BUDGET_PARAMS = "budget_params"
    const val RANK_SCHEDULE_MODULES = "modules"
    const val RANK_SCHEDULE_PHASES = "phases"
    const val RANK_SCHEDULE_MASKS = "masks"

    const val FILE_PATH = "path"
    const val FILE_SHA256 = "sha256"
    const val FILE_SIZE = "size"

    const val OPTIMIZER_NAME = "name"
    const val OPTIMIZER_LR = "lr"

    const val BACKBONE_QUANT = "quant"
    const val BACKBONE_BYTES_BY_DTYPE = "bytes_by_dtype"
    const val BACKBONE_TOTAL_BYTES = "total_bytes"

    /** Every top-level key a manifest must carry (Python: REQUIRED_KEYS). */
    val REQUIRED_KEYS = listOf(
        KEY_SCHEMA, KEY_SCHEMA_VERSION, KEY_FORMAT, KEY_SDK_VERSION, KEY_MODEL, KEY_INPUT_SPEC,
        KEY_METHODS, KEY_TRAINABLE, KEY_RANK_SCHEDULE, KEY_PERFORMANCE_MODEL, KEY_OPTIMIZER,
        KEY_BACKBONE, KEY_FILES,
    )
}
