import Foundation
import onnxruntime_training_objc
import PersonalizationCore

/// ONNX Runtime training (pod `onnxruntime-training-objc` 1.19.2, the last release) on an `onnx`
/// bundle, behind the core's `Trainer`: the adapters *inside* the quantised backbone train on the
/// phone; the optimiser (AdamW for this SDK's bundles) is baked into `optimizer_model.onnx`.
///
/// API as declared in microsoft/onnxruntime `objectivec/include/ort_training_session.h` and
/// `ort_checkpoint.h` (the header layout with `checkpoint:` and `getTrainInputNamesWithError:`):
/// `ORTCheckpoint(path:)`, `ORTTrainingSession(env:sessionOptions:checkpoint:trainModelPath:
/// evalModelPath:optimizerModelPath:)`, `trainStep(withInputValues:)` / `evalStep(withInputValues:)`
/// (inputs by position: ordered here by `getTrainInputNames()` / `getEvalInputNames()`),
/// `optimizerStep()`, `lazyResetGrad()`, `setLearningRate(_:)`,
/// `ORTCheckpoint.saveCheckpoint(toPath:withOptimizerState:)`.
///
/// Parameters by name: the Objective-C API has no per-name read (only `toBuffer(withTrainable:)`,
/// whose order is the training graph's parameter inputs, not recorded in the manifest), so
/// `parameters()` is empty and the SDK turns the ORT checkpoint into the PEFT adapter; on-device
/// re-allocation (which writes grown ranks by name) is not offered for ORT bundles.
final class OrtTrainer: Trainer {
    static let checkpointDir = "ort_checkpoint"

    private let env: ORTEnv
    private let checkpoint: ORTCheckpoint
    private let session: ORTTrainingSession
    private let trainInputs: [String]
    private let evalInputs: [String]
    private let trainLoss: Int
    private let evalLoss: Int
    private let evalLogits: Int
    private let maskInputs: [MaskInput]

    /// `resumeFrom`: a checkpoint directory of the core's loop that `save` wrote, or nil for the bundle's own.
    init(_ manifest: Manifest, bundle: URL, resumeFrom: URL?) throws {
        let env = try ORTEnv(loggingLevel: ORTLoggingLevel.warning)
        let start = resumeFrom?.appendingPathComponent(OrtTrainer.checkpointDir) ?? bundle.appendingPathComponent(Contract.onnxCheckpointFile)
        let checkpoint = try ORTCheckpoint(path: start.path)
        let session = try ORTTrainingSession(env: env, sessionOptions: try ORTSessionOptions(), checkpoint: checkpoint,
                                             trainModelPath: bundle.appendingPathComponent(Contract.onnxTrainingFile).path,
                                             evalModelPath: bundle.appendingPathComponent(Contract.onnxEvalFile).path,
                                             optimizerModelPath: bundle.appendingPathComponent(Contract.onnxOptimizerFile).path)
        try session.setLearningRate(Float(manifest.optimizer.lr))
        let trainInputs = try session.getTrainInputNames()
        let evalInputs = try session.getEvalInputNames()
        let expected = Set([Contract.inputPixelValues, Contract.inputIds, Contract.inputLabels] + manifest.schedule.maskInputs.map { $0.input })
        for (what, names) in [(Contract.onnxTrainingFile, trainInputs), (Contract.onnxEvalFile, evalInputs)] where Set(names) != expected {
            throw BundleError(bundle.path, ["\(what) takes inputs \(names); the manifest's are \(expected.sorted()); re-export the bundle"])
        }
        func index(_ names: [String], _ name: String, _ file: String) throws -> Int {
            guard let i = names.firstIndex(of: name) else { throw BundleError(bundle.path, ["\(file) has no output '\(name)' (outputs \(names))"]) }
            return i
        }
        let evalOutputs = try session.getEvalOutputNames()
        trainLoss = try index(try session.getTrainOutputNames(), Contract.outputLoss, Contract.onnxTrainingFile)
        evalLoss = try index(evalOutputs, Contract.outputLoss, Contract.onnxEvalFile)
        evalLogits = try index(evalOutputs, Contract.outputLogits, Contract.onnxEvalFile)
        self.env = env
        self.checkpoint = checkpoint
        self.session = session
        self.trainInputs = trainInputs
        self.evalInputs = evalInputs
        maskInputs = manifest.schedule.maskInputs
    }

    private func tensor<T>(_ values: [T], _ type: ORTTensorElementDataType, _ shape: [Int]) throws -> ORTValue {
        let data = values.withUnsafeBufferPointer { NSMutableData(bytes: $0.baseAddress, length: $0.count * MemoryLayout<T>.stride) }
        return try ORTValue(tensorData: data, elementType: type, shape: shape.map { NSNumber(value: $0) })
    }

    /// The graph's inputs in `order` (its declared order: ORT takes them by position).
    private func inputs(_ batch: Batch, _ masks: [[Float]], _ order: [String]) throws -> [ORTValue] {
        var byName: [String: ORTValue] = [
            Contract.inputPixelValues: try tensor(batch.pixelValues, .float, batch.pixelShape),
            Contract.inputIds: try tensor(batch.inputIds, .int64, batch.textShape),
            Contract.inputLabels: try tensor(batch.labels, .int64, batch.textShape),
        ]
        for (m, mask) in zip(maskInputs, masks) { byName[m.input] = try tensor(mask, .float, [m.rMax]) }
        return order.map { byName[$0]! }
    }

    private func floats(_ value: ORTValue) throws -> [Float] {
        let data = try value.tensorData() as Data
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float {
        let outputs = try session.trainStep(withInputValues: try inputs(batch, masks, trainInputs))
        return try floats(outputs[trainLoss])[0]
    }

    func applyStep() throws {
        try session.optimizerStep()
        try session.lazyResetGrad() // otherwise gradients accumulate across trainStep calls
    }

    func discardStep() throws { try session.lazyResetGrad() }

    /// ORT's own checkpoint with the optimiser state. It holds the frozen parameters too (the
    /// Objective-C API offers no trainable-only save that keeps the AdamW moments), so the app
    /// checkpoints every `checkpointEvery` steps, not every step.
    func save(_ dir: URL) throws {
        try checkpoint.saveCheckpoint(toPath: dir.appendingPathComponent(OrtTrainer.checkpointDir).path, withOptimizerState: true)
    }

    func evaluate(_ batch: Batch, _ masks: [[Float]]) throws -> (Float, [Float]) {
        let outputs = try session.evalStep(withInputValues: try inputs(batch, masks, evalInputs))
        return (try floats(outputs[evalLoss])[0], try floats(outputs[evalLogits]))
    }

    func parameters() throws -> [String: [Float]] { [:] }
}
