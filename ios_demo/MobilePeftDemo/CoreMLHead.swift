import CoreML
import Foundation

/// The Core ML path: head-only personalisation. Core ML cannot train LoRA inside a backbone (ML
/// Program models are not updatable), so a `coreml` bundle is a frozen, quantised ML Program backbone
/// that maps an example to `features`, plus a small fp32 *updatable NeuralNetwork* classifier head
/// over a fixed answer vocabulary, trained with `MLUpdateTask`.
///
/// Each `step` runs the backbone on the batch, then one `MLUpdateTask` over those features (the head's
/// own SGD settings, epochs and lr, were fixed at export by coremltools). The updated head is written
/// to app storage and loaded for the next step.
///
/// UNVERIFIED: the backbone's input names (taken here from its model description: pixel_values and
/// input_ids when present) and the head's training label name (from its training-input description,
/// default Contract.coremlHeadLabel); export/coreml.py was not written when this was.
final class CoreMLHeadTrainer: BundleTrainer {
    private let manifest: Manifest
    private let backbone: MLModel
    private var headURL: URL // compiled .mlmodelc of the current head
    private let workDir: URL

    init(_ manifest: Manifest, compiledHead: URL?) throws {
        self.manifest = manifest
        let config = MLModelConfiguration()
        config.computeUnits = .all
        backbone = try MLModel(contentsOf: try MLModel.compileModel(at: manifest.file(Contract.coremlBackboneFile)), configuration: config)
        workDir = FileManager.default.temporaryDirectory.appendingPathComponent("mobile-peft-head", isDirectory: true)
        try FileManager.default.createDirectory(at: workDir, withIntermediateDirectories: true)
        headURL = try compiledHead ?? MLModel.compileModel(at: manifest.file(Contract.coremlHeadFile))
    }

    private func multiArray<T>(_ values: [T], shape: [Int], type: MLMultiArrayDataType) throws -> MLMultiArray {
        let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: type)
        values.withUnsafeBytes { src in a.dataPointer.copyMemory(from: src.baseAddress!, byteCount: src.count) }
        return a
    }

    /// Features of each example of the batch, one backbone prediction per example.
    private func features(_ batch: Batch) throws -> [MLFeatureValue] {
        let s = batch.imageSize, t = batch.maxTextLen
        let inputs = backbone.modelDescription.inputDescriptionsByName
        return try (0..<batch.batchSize).map { i in
            var dict: [String: MLFeatureValue] = [:]
            if inputs[Contract.inputPixelValues] != nil {
                let px = Array(batch.pixelValues[(i * 3 * s * s)..<((i + 1) * 3 * s * s)])
                dict[Contract.inputPixelValues] = MLFeatureValue(multiArray: try multiArray(px, shape: [1, 3, s, s], type: .float32))
            }
            if inputs[Contract.inputIds] != nil {
                // The prompt ids (labels masked back to padding) so the backbone cannot see the answer.
                let ids = (0..<t).map { j -> Int32 in
                    batch.labels[i * t + j] == PreprocessDefaults.ignoreIndex ? Int32(batch.inputIds[i * t + j]) : Int32(0)
                }
                dict[Contract.inputIds] = MLFeatureValue(multiArray: try multiArray(ids, shape: [1, t], type: .int32))
            }
            let out = try backbone.prediction(from: MLDictionaryFeatureProvider(dictionary: dict))
            guard let f = out.featureValue(for: Contract.coremlFeatures) else { throw BundleError("backbone has no '\(Contract.coremlFeatures)' output") }
            return f
        }
    }

    func step(_ step: Int, batch: Batch) throws -> Float {
        let head = try MLModel(contentsOf: headURL)
        let labelName = head.modelDescription.trainingInputDescriptionsByName.keys.first { $0 != Contract.coremlFeatures } ?? Contract.coremlHeadLabel
        let feats = try features(batch)
        let providers: [MLFeatureProvider] = try feats.enumerated().map { i, f in
            try MLDictionaryFeatureProvider(dictionary: [Contract.coremlFeatures: f, labelName: MLFeatureValue(string: batch.answers[i])])
        }
        var loss = Float.nan
        var failure: Error?
        let done = DispatchSemaphore(value: 0)
        let handlers = MLUpdateProgressHandlers(forEvents: [.epochEnd], progressHandler: { context in
            if let l = context.metrics[.lossValue] as? Double { loss = Float(l) }
        }, completionHandler: { [self] context in
            defer { done.signal() }
            if let error = context.task.error { failure = error; return }
            if let l = context.metrics[.lossValue] as? Double { loss = Float(l) }
            do {
                // The task writes an .mlmodelc; keep it as the head of the next step.
                let next = workDir.appendingPathComponent("head-\(step).mlmodelc")
                try? FileManager.default.removeItem(at: next)
                try context.model.write(to: next)
                headURL = next
            } catch { failure = error }
        })
        let task = try MLUpdateTask(forModelAt: headURL, trainingData: MLArrayBatchProvider(array: providers),
                                    configuration: nil, progressHandlers: handlers)
        task.resume()
        done.wait()
        if let failure { throw failure }
        return loss
    }

    func saveCheckpoint(_ dir: URL, step: Int) throws {
        try Checkpoint.writeAtomic(dir.appendingPathComponent(Checkpoint.coremlHeadFile)) { tmp in
            try FileManager.default.copyItem(at: headURL, to: tmp)
        }
        try Checkpoint.writeState(dir, step: step, manifest: manifest)
    }
}
