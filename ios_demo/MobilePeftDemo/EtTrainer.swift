#if MOBILEPEFT_EXECUTORCH
import Foundation
import PersonalizationCore

/// ExecuTorch `pte` bundles (optional engine) through the Objective-C++ `MPETTrainer`
/// (EtTrainer.mm) behind the core's `Trainer`: SGD (the only optimiser ExecuTorch has on device)
/// with the manifest's lr, momentum and weight decay. Parameters and gradients are read by fully
/// qualified name, so the core writes the PEFT adapter and re-allocates ranks on the phone.
final class EtTrainer: Trainer {
    static let ptdFile = "adapters.resume.ptd"

    private let trainer: MPETTrainer
    private let trainable: [Trainable]
    private let evalMethod: String
    private var stepped = false

    init(_ manifest: Manifest, bundle: URL, resumeFrom: URL?) throws {
        let data = resumeFrom?.appendingPathComponent(EtTrainer.ptdFile) ?? bundle.appendingPathComponent(Contract.ptdFile)
        let opt = manifest.optimizer.raw
        trainer = try MPETTrainer(programPath: bundle.appendingPathComponent(Contract.pteFile).path, dataPath: data.path,
                                  method: manifest.methods[Contract.MethodKey.train]?[Contract.MethodKey.method]?.string ?? Contract.methodTrain,
                                  learningRate: manifest.optimizer.lr, momentum: opt[Contract.OptimizerKey.momentum]?.number ?? 0,
                                  weightDecay: opt[Contract.OptimizerKey.weightDecay]?.number ?? 0)
        trainable = manifest.trainable
        evalMethod = manifest.methods[Contract.MethodKey.eval]?[Contract.MethodKey.method]?.string ?? Contract.methodEval
    }

    private static func bytes<T>(_ a: [T]) -> Data { a.withUnsafeBufferPointer { Data(buffer: $0) } }
    private static func floats(_ d: Data) -> [Float] { d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }
    private static func shape(_ s: [Int]) -> [NSNumber] { s.map { NSNumber(value: $0) } }

    func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float {
        let loss = try trainer.forwardBackward(withPixelValues: EtTrainer.bytes(batch.pixelValues), pixelShape: EtTrainer.shape(batch.pixelShape),
                                               inputIds: EtTrainer.bytes(batch.inputIds), labels: EtTrainer.bytes(batch.labels),
                                               textShape: EtTrainer.shape(batch.textShape), masks: masks.map(EtTrainer.bytes))
        stepped = true
        return loss
    }

    func applyStep() throws { try trainer.applyStep() }

    /// Nothing to undo: ExecuTorch's gradients are outputs of the next forward, not accumulated.
    func discardStep() throws {}

    func gradientsFinite() throws -> Bool { try gradients().values.allSatisfy { $0.allSatisfy { $0.isFinite } } }

    func save(_ dir: URL) throws { try trainer.saveParameters(toPTD: dir.appendingPathComponent(EtTrainer.ptdFile).path) }

    func evaluate(_ batch: Batch, _ masks: [[Float]]) throws -> (Float, [Float]) {
        let outputs = try trainer.runMethod(evalMethod, pixelValues: EtTrainer.bytes(batch.pixelValues), pixelShape: EtTrainer.shape(batch.pixelShape),
                                            inputIds: EtTrainer.bytes(batch.inputIds), labels: EtTrainer.bytes(batch.labels),
                                            textShape: EtTrainer.shape(batch.textShape), masks: masks.map(EtTrainer.bytes))
        return (EtTrainer.floats(outputs[0])[0], EtTrainer.floats(outputs[1]))
    }

    /// Manifest names -> values. The graphs name tensors as the manifest does (`Contract.trainablePrefix`
    /// + module path); a name the runtime lacks is an error, not a silently missing tensor.
    private func byManifestName(_ tensors: [String: Data]) throws -> [String: [Float]] {
        var out: [String: [Float]] = [:]
        for t in trainable {
            guard let d = tensors[t.name] else {
                throw BundleError(Contract.pteFile, ["the runtime has no tensor \(t.name) (it has \(tensors.keys.sorted().prefix(4)) ...); re-export the bundle"])
            }
            out[t.name] = EtTrainer.floats(d)
        }
        return out
    }

    /// Empty before the first forward_backward: ExecuTorch fills named_parameters only then.
    func parameters() throws -> [String: [Float]] { stepped ? try byManifestName(try trainer.parameters()) : [:] }

    func gradients() throws -> [String: [Float]] { try byManifestName(try trainer.gradients()) }

    func setParameters(_ values: [String: [Float]]) throws { try trainer.setParameters(values.mapValues(EtTrainer.bytes)) }
}
#endif
