import CoreML
import Foundation
import PersonalizationCore

/// The Core ML path behind the core's `Trainer`: head-only personalisation. Core ML cannot train
/// adapters inside a backbone (ML Program models are not updatable), so a `coreml` bundle is a
/// frozen, quantised ML Program backbone `(pixel_values [1,3,S,S] f32, input_ids [1,T] int32) ->
/// features [1,D]` and a small fp32 updatable NeuralNetwork head `features [D] -> answer_probs [K]`
/// (export/coreml.py), trained with `MLUpdateTask`. Batches use the core's `AnswerHead` layout.
///
/// * the backbone's `[1, D]` features are copied into the `[D]` array the head declares;
/// * one step is one pass over one batch: the update runs with `MLParameterKey.epochs = 1`
///   (the head was exported with 10 epochs as its default);
/// * each update writes a new compiled head into this trainer's work directory and the previous one
///   is deleted; the work directory (and the compiled backbone) are removed in `close()`;
/// * the prompt's padding is the manifest's pad id (the core's `InputEncoder.prompt`).
final class CoreMLHeadTrainer: Trainer {
    static let headDir = "head.mlmodelc"

    private let backbone: MLModel
    private let backboneCompiled: URL
    private let workDir: URL
    private var headURL: URL
    private var head: MLModel
    private var generation = 0
    private var pending: [MLFeatureProvider]?
    private let answers: [String]

    init(_ manifest: Manifest, bundle: URL, resumeFrom: URL?) throws {
        let headInfo = manifest.methods[Contract.MethodKey.head]?.object
        guard let answers = headInfo?[Contract.MethodKey.answers]?.array?.compactMap({ $0.string }), !answers.isEmpty else {
            throw BundleError(bundle.path, ["\(Contract.Key.methods).\(Contract.MethodKey.head).\(Contract.MethodKey.answers) is missing; re-export the Core ML bundle"])
        }
        self.answers = answers
        let config = MLModelConfiguration()
        config.computeUnits = .all
        let compiledBackbone = try MLModel.compileModel(at: bundle.appendingPathComponent(Contract.coremlBackboneFile))
        backboneCompiled = compiledBackbone
        backbone = try MLModel(contentsOf: compiledBackbone, configuration: config)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("mobile-peft-head-\(UUID().uuidString)", isDirectory: true)
        workDir = work
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let first = work.appendingPathComponent("head-0.mlmodelc")
        if let resumeFrom {
            try FileManager.default.copyItem(at: resumeFrom.appendingPathComponent(CoreMLHeadTrainer.headDir), to: first)
        } else {
            let compiled = try MLModel.compileModel(at: bundle.appendingPathComponent(Contract.coremlHeadFile))
            try FileManager.default.moveItem(at: compiled, to: first)
        }
        headURL = first
        head = try MLModel(contentsOf: first)
    }

    private static func array<T>(_ values: [T], _ shape: [Int], _ type: MLMultiArrayDataType) throws -> MLMultiArray {
        let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: type)
        values.withUnsafeBytes { src in a.dataPointer.copyMemory(from: src.baseAddress!, byteCount: src.count) }
        return a
    }

    /// The backbone's features of each row, as the `[D]` float32 arrays the head declares.
    private func features(_ batch: Batch) throws -> [MLMultiArray] {
        let s = batch.imageSize, t = batch.textLen, plane = 3 * s * s
        return try (0..<batch.batchSize).map { i in
            let pixels = Array(batch.pixelValues[(i * plane)..<((i + 1) * plane)])
            let ids = (0..<t).map { Int32(batch.inputIds[i * t + $0]) }
            let input = try MLDictionaryFeatureProvider(dictionary: [
                Contract.inputPixelValues: MLFeatureValue(multiArray: try CoreMLHeadTrainer.array(pixels, [1, 3, s, s], .float32)),
                Contract.inputIds: MLFeatureValue(multiArray: try CoreMLHeadTrainer.array(ids, [1, t], .int32)),
            ])
            guard let f = try backbone.prediction(from: input).featureValue(for: Contract.coremlFeatures)?.multiArrayValue else {
                throw BundleError(Contract.coremlBackboneFile, ["the backbone has no '\(Contract.coremlFeatures)' output"])
            }
            // [1, D] (what the backbone declares) -> [D] (what the head declares); fp16 or fp32 in.
            let d = f.count
            let flat = try MLMultiArray(shape: [NSNumber(value: d)], dataType: .float32)
            for j in 0..<d { flat[j] = NSNumber(value: f[j].floatValue) }
            return flat
        }
    }

    private func probabilities(_ feats: [MLMultiArray]) throws -> [[Float]] {
        try feats.map { f in
            let out = try head.prediction(from: try MLDictionaryFeatureProvider(dictionary: [Contract.coremlFeatures: MLFeatureValue(multiArray: f)]))
            guard let p = out.featureValue(for: Contract.coremlHeadOutput)?.dictionaryValue else {
                throw BundleError(Contract.coremlHeadFile, ["the head has no '\(Contract.coremlHeadOutput)' output"])
            }
            return answers.map { Float(truncating: p[AnyHashable($0)] ?? 0) }
        }
    }

    /// The loss of the current head on the batch (before the update, as ORT's trainStep reports it).
    func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float {
        let feats = try features(batch)
        let classes = AnswerHead.classes(batch)
        pending = try zip(feats, classes).map { f, c in
            try MLDictionaryFeatureProvider(dictionary: [
                Contract.coremlFeatures: MLFeatureValue(multiArray: f),
                Contract.coremlHeadLabel: MLFeatureValue(string: answers[c]),
            ])
        }
        return AnswerHead.loss(probs: try probabilities(feats), classes: classes)
    }

    /// One `MLUpdateTask` pass (one epoch) over the pending batch; the updated head replaces the old one.
    func applyStep() throws {
        guard let providers = pending else { return }
        pending = nil
        let config = MLModelConfiguration()
        config.parameters = [MLParameterKey.epochs: 1]
        generation += 1
        let next = workDir.appendingPathComponent("head-\(generation).mlmodelc")
        var failure: Error?
        let done = DispatchSemaphore(value: 0)
        let task = try MLUpdateTask(forModelAt: headURL, trainingData: MLArrayBatchProvider(array: providers), configuration: config) { context in
            defer { done.signal() }
            if let error = context.task.error { failure = error; return }
            do { try context.model.write(to: next) } catch { failure = error }
        }
        task.resume()
        done.wait()
        if let failure { throw failure }
        let old = headURL
        headURL = next
        head = try MLModel(contentsOf: next)
        try? FileManager.default.removeItem(at: old)
    }

    func discardStep() throws { pending = nil }

    func save(_ dir: URL) throws {
        try FileManager.default.copyItem(at: headURL, to: dir.appendingPathComponent(CoreMLHeadTrainer.headDir))
    }

    func evaluate(_ batch: Batch, _ masks: [[Float]]) throws -> (Float, [Float]) {
        let probs = try probabilities(try features(batch))
        return (AnswerHead.loss(probs: probs, classes: AnswerHead.classes(batch)), AnswerHead.logits(probs: probs, textLen: batch.textLen))
    }

    /// The head is not a manifest tensor: nothing for the PEFT writer (the trained head is `head.mlmodelc` in the checkpoint).
    func parameters() throws -> [String: [Float]] { [:] }

    func close() {
        try? FileManager.default.removeItem(at: workDir)
        try? FileManager.default.removeItem(at: backboneCompiled)
    }
}
