import Foundation

/// The bundle contract, mirrored by hand from `export/contract.py` (the one place that owns it).
///
/// Naming rule, checked by `tests/demo_apps/test_contract_mirror.py`: the Kotlin mirror's
/// UPPER_SNAKE name (`android_demo/.../Contract.kt`) in lowerCamelCase:
///  - a top-level constant: `PTE_FILE` -> `pteFile`;
///  - a manifest key `Key.X`: `KEY_X` -> `keyX`;
///  - an entry `v` of a section tuple `<SECTION>_KEYS`: `<SECTION>_<V>` -> e.g. `inputSpecImageSize`.
/// Every `static let` here must exist in the Python contract with the same value; change
/// `export/contract.py` first, then this file and Contract.kt.
enum Contract {
    // -- schema ---------------------------------------------------------------------------------
    static let schemaVersion = 1
    static let schemaName = "mobile-peft/bundle"
    static let supportedSchemaVersions = [1]

    static let manifestFile = "manifest.json"
    static let tokenizerFile = "tokenizer.json"

    static let formatPte = "pte"
    static let formatOnnx = "onnx"
    static let formatCoreml = "coreml"

    // -- ExecuTorch -----------------------------------------------------------------------------
    static let pteFile = "model.pte"
    static let ptdFile = "adapters.ptd"
    static let methodTrain = "forward"
    static let methodEval = "eval"
    static let etGradientsIndexPrefix = "__et_training_gradients_index_"
    static let etParametersIndexPrefix = "__et_training_parameters_index_"
    static let etFqnPrefix = "__et_training_fqn_"

    // -- ONNX Runtime training ------------------------------------------------------------------
    static let onnxTrainingFile = "training_model.onnx"
    static let onnxEvalFile = "eval_model.onnx"
    static let onnxOptimizerFile = "optimizer_model.onnx"
    static let onnxCheckpointFile = "checkpoint"
    static let onnxInferenceFile = "inference_model.onnx"
    static let onnxLossOutput = "onnx::loss::1"

    // -- Core ML (iOS only; kept so both apps mirror the same set) -------------------------------
    static let coremlBackboneFile = "backbone.mlpackage"
    static let coremlHeadFile = "head.mlmodel"
    static let coremlFeatures = "features"
    static let coremlHeadOutput = "answer_probs"
    static let coremlHeadLabel = "answer"

    // -- graph inputs / outputs -----------------------------------------------------------------
    static let inputPixelValues = "pixel_values"
    static let inputIds = "input_ids"
    static let inputLabels = "labels"
    static let outputLoss = "loss"
    static let outputLogits = "logits"
    static let maskSuffix = "_rank_mask"

    /// Graph input name of the rank mask of `slot` in adapter `module` (Python: `mask_input_name`).
    static func maskInputName(module: String, slot: String) -> String { "\(module).\(slot)\(maskSuffix)" }

    // -- manifest keys (Python: class Key) ------------------------------------------------------
    static let keySchema = "schema"
    static let keySchemaVersion = "schema_version"
    static let keyFormat = "format"
    static let keySdkVersion = "sdk_version"
    static let keyModel = "model"
    static let keyInputSpec = "input_spec"
    static let keyMethods = "methods"
    static let keyTrainable = "trainable"
    static let keyRankSchedule = "rank_schedule"
    static let keyPerformanceModel = "performance_model"
    static let keyOptimizer = "optimizer"
    static let keyBackbone = "backbone"
    static let keyFiles = "files"

    // -- keys inside sections (Python: <SECTION>_KEYS) -------------------------------------------
    static let modelName = "name"
    static let modelQuant = "quant"
    static let modelParameters = "parameters"
    static let modelNumImageTokens = "num_image_tokens"
    static let modelVocabSize = "vocab_size"

    static let inputSpecImageSize = "image_size"
    static let inputSpecImageMean = "image_mean"
    static let inputSpecImageStd = "image_std"
    static let inputSpecPromptTemplate = "prompt_template"
    static let inputSpecMaxTextLen = "max_text_len"
    static let inputSpecSequenceLength = "sequence_length"
    static let inputSpecBatchSize = "batch_size"
    static let inputSpecTokenIds = "token_ids"
    static let inputSpecTokenizerFile = "tokenizer_file"

    static let trainableName = "name"
    static let trainableModule = "module"
    static let trainableSlot = "slot"
    static let trainableShape = "shape"
    static let trainableDtype = "dtype"

    static let rankScheduleAllocator = "allocator"
    static let rankScheduleAdapter = "adapter"
    static let rankScheduleBudgetParams = "budget_params"
    static let rankScheduleModules = "modules"
    static let rankSchedulePhases = "phases"
    static let rankScheduleMasks = "masks"

    static let filePath = "path"
    static let fileSha256 = "sha256"
    static let fileSize = "size"

    static let optimizerName = "name"
    static let optimizerLr = "lr"

    static let backboneQuant = "quant"
    static let backboneBytesByDtype = "bytes_by_dtype"
    static let backboneTotalBytes = "total_bytes"

    /// Every top-level key a manifest must carry (Python: REQUIRED_KEYS).
    static let requiredKeys = [
        keySchema, keySchemaVersion, keyFormat, keySdkVersion, keyModel, keyInputSpec,
        keyMethods, keyTrainable, keyRankSchedule, keyPerformanceModel, keyOptimizer,
        keyBackbone, keyFiles,
    ]
}
