import Foundation

/// What the training loop needs from a runtime (the app's ONNX Runtime and Core ML engines; a fake
/// in the tests). Inputs are the contract's, in order: pixel_values, input_ids, labels, then one
/// rank mask per `rank_schedule.mask_inputs` entry.
public protocol Trainer: AnyObject {
    /// Forward and backward of `batch` with `masks`; the loss. The gradients wait for `applyStep` or `discardStep`.
    func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float
    /// The optimiser step with the pending gradients.
    func applyStep() throws
    /// Drop the pending gradients, weights untouched (the loss or a gradient was NaN or infinite).
    func discardStep() throws
    /// Whether every pending gradient is finite (a runtime that cannot read its gradients says true).
    func gradientsFinite() throws -> Bool
    /// Write what resumes this trainer (weights, optimiser state) into `dir`, an empty directory.
    func save(_ dir: URL) throws
    /// Loss and logits `[B, T, V]` of the eval graph at the current weights.
    func evaluate(_ batch: Batch, _ masks: [[Float]]) throws -> (Float, [Float])
    /// The current trainable tensors by manifest name (for the personal adapter).
    func parameters() throws -> [String: [Float]]
    /// The pending gradients by manifest name (on-device re-allocation reads every active slot's down and up).
    func gradients() throws -> [String: [Float]]
    /// Write `values` (tensors by manifest name) into the trainable weights (re-allocation's grown ranks).
    func setParameters(_ values: [String: [Float]]) throws
    /// Release the runtime's resources.
    func close()
}

extension Trainer {
    public func gradientsFinite() throws -> Bool { true }
    public func evaluate(_ batch: Batch, _ masks: [[Float]]) throws -> (Float, [Float]) {
        throw UnsupportedError("\(type(of: self)) has no eval method")
    }
    public func gradients() throws -> [String: [Float]] {
        throw UnsupportedError("\(type(of: self)) cannot read its gradients; on-device re-allocation needs them")
    }
    public func setParameters(_ values: [String: [Float]]) throws {
        throw UnsupportedError("\(type(of: self)) cannot write its parameters; on-device re-allocation needs it")
    }
    public func close() {}
}

/// A held-out split for accuracy before and after training: `count` examples, a batch of any indices.
public struct EvalSet {
    public let count: Int
    public let batchOf: ([Int]) throws -> Batch
    public let ignoreIndex: Int
    public init(count: Int, ignoreIndex: Int = labelIgnoreIndex, batchOf: @escaping ([Int]) throws -> Batch) {
        self.count = count
        self.batchOf = batchOf
        self.ignoreIndex = ignoreIndex
    }
}

/// Opens a `Trainer`: fresh (`nil`) or resumed from a checkpoint directory its `Trainer.save` wrote.
public typealias TrainerFactory = (URL?) throws -> Trainer

public struct TrainOptions {
    /// Optimiser steps in total, counting resumed ones.
    public let steps: Int
    public let checkpointEvery: Int
    /// Seed of the data order (as the SDK's `--seed`).
    public let seed: Int
    /// Steps with a non-finite loss or gradient tolerated (not applied) before the run stops.
    public let maxBadSteps: Int
    /// Re-allocate ranks on the device with the bundle's performance model (hydra-rank bundles).
    public let onDeviceRealloc: Bool
    /// Steps between re-allocation points; default a third of the run (as the SDK's `realloc_every`).
    public let reallocEvery: Int?

    public init(steps: Int, checkpointEvery: Int = 10, seed: Int = 0, maxBadSteps: Int = 5, onDeviceRealloc: Bool = false,
                reallocEvery: Int? = nil) throws {
        if steps < 1 { throw ConfigError("steps=\(steps); expected >= 1.") }
        if checkpointEvery < 1 { throw ConfigError("checkpoint_every=\(checkpointEvery); expected >= 1.") }
        if maxBadSteps < 0 { throw ConfigError("max_bad_steps=\(maxBadSteps); expected >= 0.") }
        if let r = reallocEvery, r < 0 { throw ConfigError("realloc_every=\(r); expected >= 0 (0 turns it off).") }
        self.steps = steps
        self.checkpointEvery = checkpointEvery
        self.seed = seed
        self.maxBadSteps = maxBadSteps
        self.onDeviceRealloc = onDeviceRealloc
        self.reallocEvery = reallocEvery
    }
}

public enum StopReason { case completed, cancelled }

public struct TrainResult {
    public let step: Int
    public let losses: [Float]
    /// Steps whose loss or gradients were not finite (not applied), over the whole run including resumed parts.
    public let badSteps: Int
    public let stop: StopReason
    public let resumedFrom: Int?
    public let checkpoint: URL?
    /// The masks of the last step (what the personal adapter is written at).
    public let masks: [[Float]]
    /// The trained tensors at the end, by manifest name (empty when the runtime cannot read them).
    public let parameters: [String: [Float]]
    /// The re-allocation events of the whole run (`{"step": s, **Decision.event(budget)}`, as the SDK logs them).
    public let events: [JSONObject]
    /// The ranks of the last step.
    public let ranks: Ranks
    /// Accuracy on the `EvalSet` at the run's start (read back from the checkpoint when resumed).
    public let evalBefore: Evaluate.Report?
    /// Accuracy on the `EvalSet` at the end of a completed run.
    public let evalAfter: Evaluate.Report?
}

public protocol TrainListener: AnyObject {
    func onStep(_ step: Int, _ loss: Float)
    func onBadStep(_ step: Int, _ loss: Float, _ badSteps: Int)
    func onPhase(_ step: Int, _ phase: Int)
    func onCheckpoint(_ step: Int, _ dir: URL)
    func onRealloc(_ step: Int, _ event: JSONObject)
    /// Accuracy on the `EvalSet`: before training (step 0; on resume the report read back from the checkpoint) and after the last step.
    func onEval(_ step: Int, _ report: Evaluate.Report)
}

extension TrainListener {
    public func onStep(_ step: Int, _ loss: Float) {}
    public func onBadStep(_ step: Int, _ loss: Float, _ badSteps: Int) {}
    public func onPhase(_ step: Int, _ phase: Int) {}
    public func onCheckpoint(_ step: Int, _ dir: URL) {}
    public func onRealloc(_ step: Int, _ event: JSONObject) {}
    public func onEval(_ step: Int, _ report: Evaluate.Report) {}
}

/// A listener that hears nothing.
public final class SilentListener: TrainListener { public init() {} }
