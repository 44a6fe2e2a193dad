import Foundation

/// What the UI needs from each runtime; one implementation per bundle format.
protocol BundleTrainer: AnyObject {
    /// One optimiser step on `batch` with the rank masks of the phase active at `step`; returns the loss.
    func step(_ step: Int, batch: Batch) throws -> Float
    /// Write a resumable checkpoint for `step` into `dir` (atomically).
    func saveCheckpoint(_ dir: URL, step: Int) throws
}

enum Trainers {
    /// A trainer for the manifest's format, resumed from `checkpointDir` when it holds a checkpoint of
    /// this bundle; and the step to continue from.
    static func open(_ manifest: Manifest, checkpointDir: URL) throws -> (BundleTrainer, Int) {
        let step = Checkpoint.readState(checkpointDir, manifest: manifest)
        switch manifest.format {
        case Contract.formatPte:
            let saved = checkpointDir.appendingPathComponent(Checkpoint.etParametersFile)
            let resume = step != nil && FileManager.default.fileExists(atPath: saved.path)
            return (try EtTrainer(manifest, dataFile: resume ? saved : manifest.file(Contract.ptdFile)), resume ? step! : 0)
        case Contract.formatOnnx:
            let saved = checkpointDir.appendingPathComponent(Checkpoint.ortCheckpointFile)
            let resume = step != nil && FileManager.default.fileExists(atPath: saved.path)
            return (try OrtTrainer(manifest, checkpoint: resume ? saved : manifest.file(Contract.onnxCheckpointFile)), resume ? step! : 0)
        case Contract.formatCoreml:
            let saved = checkpointDir.appendingPathComponent(Checkpoint.coremlHeadFile)
            let resume = step != nil && FileManager.default.fileExists(atPath: saved.path)
            return (try CoreMLHeadTrainer(manifest, compiledHead: resume ? saved : nil), resume ? step! : 0)
        default:
            throw BundleError("format '\(manifest.format)' is unknown")
        }
    }
}

/// Bytes of an array, for the runtimes' tensor constructors.
func bytes<T>(_ array: [T]) -> Data { array.withUnsafeBufferPointer { Data(buffer: $0) } }

/// ExecuTorch `pte` bundles through the Objective-C++ `MPETTrainer` (EtTrainer.mm): plain SGD, the
/// only optimiser ExecuTorch has on device; rank masks are extra inputs after pixel_values, input_ids, labels.
final class EtTrainer: BundleTrainer {
    private let manifest: Manifest
    private let trainer: MPETTrainer

    init(_ manifest: Manifest, dataFile: URL) throws {
        self.manifest = manifest
        trainer = try MPETTrainer(programPath: manifest.file(Contract.pteFile).path, dataPath: dataFile.path,
                                  method: Contract.methodTrain, learningRate: manifest.optimizer.lr)
    }

    func step(_ step: Int, batch: Batch) throws -> Float {
        let masks = try manifest.schedule.masks(at: step).map { bytes($0.1) }
        return try trainer.step(withPixelValues: bytes(batch.pixelValues), pixelShape: batch.pixelShape,
                                inputIds: bytes(batch.inputIds), labels: bytes(batch.labels),
                                textShape: batch.textShape, masks: masks)
    }

    func saveCheckpoint(_ dir: URL, step: Int) throws {
        try Checkpoint.writeAtomic(dir.appendingPathComponent(Checkpoint.etParametersFile)) { tmp in
            try trainer.saveParameters(toPTD: tmp.path)
        }
        let params = try trainer.parameters()
        var tensors: [String: (shape: [Int64], data: Data)] = [:]
        for t in manifest.trainable { if let d = params[t.name] { tensors[t.name] = (t.shape, d) } }
        try Checkpoint.writeSafetensors(dir.appendingPathComponent(Checkpoint.tensorsFile), tensors: tensors, metadata: ["step": "\(step)"])
        try Checkpoint.writeState(dir, step: step, manifest: manifest)
    }
}
