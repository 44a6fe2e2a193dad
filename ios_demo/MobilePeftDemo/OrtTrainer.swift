import Foundation
import onnxruntime_training_objc

/// ONNX Runtime training (pod `onnxruntime-training-objc` 1.19.2, the last release) on an `onnx`
/// bundle. Unlike Core ML, ORT trains the adapters *inside* the quantised backbone on iOS; the
/// optimiser (AdamW for this SDK's bundles) is baked into `optimizer_model.onnx`.
///
/// API as read in microsoft/onnxruntime objectivec/include/ort_training_session.h, ort_checkpoint.h,
/// ort_value.h and the ORT iOS on-device-training tutorial: `ORTCheckpoint(path:)`,
/// `ORTTrainingSession(env:sessionOptions:checkPoint:trainModelPath:evalModelPath:optimizerModelPath:)`,
/// `trainStep(withInputValues:)` (positional inputs), `optimizerStep()`, `lazyResetGrad()`,
/// `setLearningRate(_:)`, `inputNames(withTraining:)`, `saveCheckpoint(toPath:withOptimizerState:)`.
final class OrtTrainer: BundleTrainer {
    private let manifest: Manifest
    private let env: ORTEnv
    private let checkpoint: ORTCheckpoint // must outlive the session (ort_checkpoint.h)
    private let session: ORTTrainingSession
    private let inputOrder: [String]

    init(_ manifest: Manifest, checkpoint checkpointURL: URL) throws {
        self.manifest = manifest
        env = try ORTEnv(loggingLevel: ORTLoggingLevel.warning)
        checkpoint = try ORTCheckpoint(path: checkpointURL.path)
        // UNVERIFIED: the Swift label is `checkPoint:` in the header read here (initWithEnv:...checkPoint:...);
        // ORT's tutorial spells it `checkpoint:`. Use whichever your pod version's header declares.
        session = try ORTTrainingSession(env: env, sessionOptions: try ORTSessionOptions(), checkPoint: checkpoint,
                                         trainModelPath: manifest.file(Contract.onnxTrainingFile).path,
                                         evalModelPath: manifest.file(Contract.onnxEvalFile).path,
                                         optimizerModelPath: manifest.file(Contract.onnxOptimizerFile).path)
        try session.setLearningRate(Float(manifest.optimizer.lr))
        // The Objective-C API takes inputs by position: order them as the training graph lists its inputs.
        inputOrder = try session.inputNames(withTraining: true)
        let expected = [Contract.inputPixelValues, Contract.inputIds, Contract.inputLabels] + manifest.schedule.masks.map(\.inputName)
        guard Set(inputOrder) == Set(expected) else {
            throw BundleError("training_model.onnx inputs \(inputOrder) differ from the manifest's \(expected); re-export the bundle.")
        }
    }

    private func value(_ data: Data, _ type: ORTTensorElementDataType, _ shape: [NSNumber]) throws -> ORTValue {
        try ORTValue(tensorData: NSMutableData(data: data), elementType: type, shape: shape)
    }

    func step(_ step: Int, batch: Batch) throws -> Float {
        var byName: [String: ORTValue] = [
            Contract.inputPixelValues: try value(bytes(batch.pixelValues), .float, batch.pixelShape),
            Contract.inputIds: try value(bytes(batch.inputIds), .int64, batch.textShape),
            // labels [B, T]: the exported graph computes the loss itself (export/onnx.py, loss=None).
            Contract.inputLabels: try value(bytes(batch.labels), .int64, batch.textShape),
        ]
        for (slot, mask) in try manifest.schedule.masks(at: step) {
            byName[slot.inputName] = try value(bytes(mask), .float, [NSNumber(value: slot.rMax)])
        }
        let outputs = try session.trainStep(withInputValues: inputOrder.map { byName[$0]! })
        let lossData = try outputs[0].tensorData() as Data // output 0 is the graph's loss
        try session.optimizerStep()
        try session.lazyResetGrad() // otherwise gradients accumulate across trainStep calls
        return lossData.withUnsafeBytes { $0.load(as: Float.self) }
    }

    func saveCheckpoint(_ dir: URL, step: Int) throws {
        try Checkpoint.writeAtomic(dir.appendingPathComponent(Checkpoint.ortCheckpointFile)) { tmp in
            try checkpoint.saveCheckpoint(toPath: tmp.path, withOptimizerState: true)
        }
        try Checkpoint.writeState(dir, step: step, manifest: manifest)
    }
}
