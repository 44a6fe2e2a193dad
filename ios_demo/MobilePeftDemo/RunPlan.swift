import Foundation
import PersonalizationCore

/// One run from a bundle and the data folder, off the main thread: validate the bundle, split the
/// data as the SDK does (seed 0, 20% of the images held out), build the engine for the bundle's
/// format, run the core's `TrainingLoop` (resuming from the newest checkpoint), then write the
/// personal adapter as PEFT files when the engine can read its tensors by name.
struct RunPlan: @unchecked Sendable {
    /// Where a run's PEFT files go, inside its run directory.
    static let adapterDir = "personal-adapter"

    let bundle: URL
    let steps: Int
    let onDeviceRealloc: Bool
    let dataFolder: URL
    let runs: URL

    struct Outcome {
        let result: TrainResult
        /// What the share sheet offers: the two PEFT files, else the newest checkpoint folder.
        let shared: [URL]
        /// The data folder's bad lines, left out (`file:line: why`).
        let skipped: [String]
    }

    /// Encoded pixels by image path, decoded once (the data check decodes every image anyway).
    final class PixelCache {
        private var pixels: [String: [Float]] = [:]
        private let lock = NSLock()
        let spec: InputSpec
        init(_ spec: InputSpec) { self.spec = spec }

        func get(_ url: URL) throws -> [Float] {
            lock.lock()
            defer { lock.unlock() }
            if let p = pixels[url.path] { return p }
            let p = InputEncoder.encodeImage(try Images.decode(url), spec)
            pixels[url.path] = p
            return p
        }
    }

    func run(cancelled: @escaping () -> Bool, listener: TrainListener) throws -> Outcome {
        let manifest = try Manifest.validateBundle(bundle)
        let tokenizer = try WordLevelTokenizer.load(bundle.appendingPathComponent(manifest.inputSpec.tokenizerFile))
        let encoder = InputEncoder(manifest.inputSpec, tokenizer)
        let cache = PixelCache(manifest.inputSpec.spec)
        var skipped: [String] = []
        let check: (URL) throws -> Void = { _ = try cache.get($0) }
        let train = try FolderDataset.load(dataFolder, split: FolderDataset.splitTrain, seed: 0, checkImage: check, skipBad: true,
                                           skipped: { skipped.append($0) })
        let held = try FolderDataset.load(dataFolder, split: FolderDataset.splitEval, seed: 0, checkImage: check, skipBad: true)

        let answers = manifest.methods[Contract.MethodKey.head]?[Contract.MethodKey.answers]?.array?.compactMap { $0.string }
        func batch(_ examples: [FolderExample], _ indices: [Int]) throws -> Batch {
            let rows = try indices.map { i -> Encoded in
                let e = examples[i]
                let text: ([Int64], [Int64])
                if manifest.format == Contract.formatCoreml {
                    text = try AnswerHead.text(encoder, e.question, e.answer, answers: answers ?? [])
                } else {
                    text = try encoder.text(e.question, e.answer, source: e.source)
                }
                return Encoded(pixels: try cache.get(e.image), inputIds: text.0, labels: text.1)
            }
            return encoder.batch(rows)
        }

        let manifestSha = try Checksums.sha256Of(bundle.appendingPathComponent(Contract.manifestFile))
        let runDir = runs.appendingPathComponent("\(bundle.lastPathComponent)-\(manifestSha.prefix(12))")
        let realloc = onDeviceRealloc && manifest.schedule.performanceModel != nil && manifest.format == Contract.formatPte
        // ORT's checkpoint holds the frozen backbone too: checkpoint it less often.
        let every = manifest.format == Contract.formatOnnx ? 25 : 10
        let loop = try TrainingLoop(
            schedule: manifest.schedule, bundleId: manifestSha, examples: train.count, batchSize: manifest.inputSpec.batchSize,
            batchOf: { try batch(train, $0) },
            options: try TrainOptions(steps: steps, checkpointEvery: every, seed: 0, onDeviceRealloc: realloc),
            store: try CheckpointStore(runDir),
            factory: { from in try RunPlan.engine(manifest, bundle, from) },
            cancelled: cancelled, listener: listener, trainable: manifest.trainable,
            evalSet: EvalSet(count: held.count, ignoreIndex: manifest.inputSpec.tokenIds.ignoreIndex) { try batch(held, $0) })
        let result = try loop.run(resume: true)

        var shared = result.checkpoint.map { [$0] } ?? []
        if result.stop == .completed && !result.parameters.isEmpty && manifest.schedule.hasScales {
            let files = try AdapterFiles.effectiveAdapter(manifest.schedule, manifest.trainable, manifest.sdkVersion, result.parameters, result.masks)
            let dir = try AdapterFiles.write(runDir.appendingPathComponent(RunPlan.adapterDir), files)
            shared = files.keys.map { dir.appendingPathComponent($0) }
        }
        return Outcome(result: result, shared: shared, skipped: skipped)
    }

    /// The engine of the bundle's format, fresh or resumed from a checkpoint its `save` wrote.
    static func engine(_ manifest: Manifest, _ bundle: URL, _ from: URL?) throws -> Trainer {
        switch manifest.format {
        case Contract.formatOnnx: return try OrtTrainer(manifest, bundle: bundle, resumeFrom: from)
        case Contract.formatCoreml: return try CoreMLHeadTrainer(manifest, bundle: bundle, resumeFrom: from)
        case Contract.formatPte:
            #if MOBILEPEFT_EXECUTORCH
            return try EtTrainer(manifest, bundle: bundle, resumeFrom: from)
            #else
            throw BundleError(bundle.path, ["this build has no ExecuTorch engine: build with MOBILEPEFT_EXECUTORCH (README, ExecuTorch)"])
            #endif
        default:
            throw BundleError(bundle.path, ["format \(Py.repr(manifest.format)) has no engine in this app"])
        }
    }
}
