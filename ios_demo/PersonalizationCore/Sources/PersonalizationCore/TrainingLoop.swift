import Foundation

/// The on-device training loop, as runtime/trainer.py `train_bundle` runs it:
///
/// * per step: the next batch of the seeded `DataStream` (the reference runtime's order) with the
///   masks of the phase active at the step, `forwardBackward`, then `applyStep`;
/// * a step whose loss or gradients are not finite is not applied (`discardStep`), but it is a step:
///   its batch is consumed, its loss recorded, the step counted; when more than
///   `TrainOptions.maxBadSteps` steps were bad the run stops with a `DivergedError`, the last good
///   checkpoint intact; a checkpoint is never written from non-finite weights;
/// * `cancelled` is checked before every step; a cancelled run checkpoints what it has;
/// * a checkpoint every `TrainOptions.checkpointEvery` steps and at the end; `run` with `resume`
///   continues from the newest one with the same data position, phase, masks, losses and counters,
///   so a resumed run sees the batches an uninterrupted one would;
/// * with `TrainOptions.onDeviceRealloc` (`Reallocator`): every applied step observes the gradients
///   of the active ranks; before a due step the shipped performance model decides, grown ranks are
///   initialised (`Trainer.parameters` -> grow -> `Trainer.setParameters`) and the masks follow the
///   new ranks; every decision is logged; the signals are checkpointed and restored;
/// * with an `EvalSet`: accuracy before the first step and after the last
///   (runtime/evaluate.py's padded batches of `batchSize`).
///
/// `bundleId` names the bundle a checkpoint belongs to (e.g. the sha256 of its manifest): resuming
/// another bundle's checkpoint is refused.
public final class TrainingLoop {
    // meta.json keys of the loop's own state (not bundle contract keys).
    public static let bundleKey = "bundle"
    public static let examplesKey = "examples"
    public static let phaseKey = "phase"
    public static let masksKey = "rank_masks"
    public static let positionKey = "position"
    public static let lossesKey = "losses"
    public static let badStepsKey = "bad_steps"
    public static let ranksKey = "active_ranks"
    public static let eventsKey = "events"
    public static let reallocKey = "realloc"
    public static let evalBeforeKey = "eval_before"
    private static let evalAccuracy = "accuracy"
    private static let evalLoss = "mean_loss"
    private static let evalExamples = "examples"

    private let schedule: RankSchedule
    private let bundleId: String
    private let examples: Int
    private let batchSize: Int
    private let batchOf: ([Int]) throws -> Batch
    private let options: TrainOptions
    private let store: CheckpointStore
    private let factory: TrainerFactory
    private let cancelled: () -> Bool
    private let listener: TrainListener
    private let evalSet: EvalSet?
    private let reallocator: Reallocator?
    private let stream: DataStream

    private var step = 0
    private var phase = 0
    private var masks: [[Float]]
    private var losses: [Float] = []
    private var badSteps = 0
    private var ranks: Ranks
    private var events: [JSONObject] = []
    private var evalBefore: Evaluate.Report?

    /// `trainable`: the manifest's trainable tensors (their roles find each slot's down/up for re-allocation).
    public init(schedule: RankSchedule, bundleId: String, examples: Int, batchSize: Int, batchOf: @escaping ([Int]) throws -> Batch,
                options: TrainOptions, store: CheckpointStore, factory: @escaping TrainerFactory,
                cancelled: @escaping () -> Bool = { false }, listener: TrainListener = SilentListener(),
                trainable: [Trainable] = [], evalSet: EvalSet? = nil) throws {
        self.schedule = schedule
        self.bundleId = bundleId
        self.examples = examples
        self.batchSize = batchSize
        self.batchOf = batchOf
        self.options = options
        self.store = store
        self.factory = factory
        self.cancelled = cancelled
        self.listener = listener
        self.evalSet = evalSet
        masks = try schedule.phaseMasks(0)
        ranks = schedule.ranks(0)
        if options.onDeviceRealloc {
            reallocator = try Reallocator(schedule, model: schedule.performanceModel, trainable: trainable,
                                          every: options.reallocEvery ?? max(1, options.steps / 3), totalSteps: options.steps, seed: options.seed)
        } else {
            reallocator = nil
        }
        stream = try DataStream(size: examples, batchSize: batchSize, position: StreamPosition(seed: options.seed))
    }

    public func run(resume: Bool = true) throws -> TrainResult {
        let last = store.latest()
        if last != nil && !resume {
            throw CheckpointError("\(store.runDir.path) already holds checkpoints; resume, or choose a new run directory.")
        }
        let from = resume ? last : nil
        if let from { try restore(try store.meta(from), from) }
        let resumedFrom: Int? = from != nil ? step : nil
        var saved = from
        var savedStep = from != nil ? step : -1
        var stop = StopReason.completed
        let trainer = try factory(from)
        defer { trainer.close() }
        if let evalSet, from == nil { evalBefore = try evaluate(trainer, evalSet) }
        if let evalBefore { listener.onEval(0, evalBefore) }
        while step < options.steps {
            if cancelled() {
                stop = .cancelled
                break
            }
            let p = schedule.phaseIndex(step)
            if p != phase {
                phase = p
                masks = try schedule.phaseMasks(p)
                ranks = schedule.ranks(p)
                listener.onPhase(step, p)
            }
            if let reallocator, reallocator.due(step) { try reallocate(trainer, reallocator) }
            let loss = try trainer.forwardBackward(try batchOf(stream.next()), masks)
            var bad = !loss.isFinite
            if !bad {
                let finite = try trainer.gradientsFinite()
                bad = !finite
            }
            if bad {
                // Not applied: the weights stay those of the last good step (and so do checkpoints).
                try trainer.discardStep()
                badSteps += 1
                listener.onBadStep(step + 1, loss, badSteps)
                if badSteps > options.maxBadSteps {
                    throw DivergedError(
                        "\(badSteps) training steps had a non-finite loss or gradient (the last at step \(step + 1); " +
                            "maxBadSteps is \(options.maxBadSteps)); none was applied and the last good checkpoint " +
                            "\(store.latest()?.path ?? "null") is intact. Lower the learning rate or check the data.")
                }
            } else {
                if let reallocator { try reallocator.observe(try trainer.gradients(), ranks) }
                try trainer.applyStep()
            }
            step += 1
            losses.append(loss)
            listener.onStep(step, loss)
            if step % options.checkpointEvery == 0 || step == options.steps {
                saved = try save(trainer)
                savedStep = step
            }
        }
        if step > 0 && (savedStep != step || saved == nil) { saved = try save(trainer) }
        let parameters = try trainer.parameters()
        var evalAfter: Evaluate.Report?
        if let evalSet, stop == .completed { evalAfter = try evaluate(trainer, evalSet) }
        if let evalAfter { listener.onEval(step, evalAfter) }
        return TrainResult(step: step, losses: losses, badSteps: badSteps, stop: stop, resumedFrom: resumedFrom, checkpoint: saved,
                           masks: masks, parameters: parameters, events: events, ranks: ranks, evalBefore: evalBefore, evalAfter: evalAfter)
    }

    private func reallocate(_ trainer: Trainer, _ reallocator: Reallocator) throws {
        let decision = try reallocator.decide(step, ranks)
        if decision.applied {
            var params = try trainer.parameters()
            ranks = try reallocator.grow(&params, decision)
            try trainer.setParameters(params)
            masks = try schedule.inputMasks(ranks)
        }
        var event = JSONObject([("step", .int(step))])
        for (k, v) in decision.event(reallocator.budget) { event[k] = v }
        events.append(event)
        listener.onRealloc(step, event)
    }

    private func evaluate(_ trainer: Trainer, _ set: EvalSet) throws -> Evaluate.Report {
        try Evaluate.run(trainer, count: set.count, batchSize: batchSize, ignoreIndex: set.ignoreIndex, masks: masks, batchOf: set.batchOf)
    }

    private static func ranksJson(_ ranks: Ranks) -> JSON {
        .object(JSONObject(Py.sorted(Array(ranks.keys)).map { m in
            (m, .object(JSONObject(Py.sorted(Array(ranks[m]!.keys)).map { s in (s, JSON.int(ranks[m]![s]!)) })))
        }))
    }

    private func save(_ trainer: Trainer) throws -> URL {
        let bad = Py.sorted(try trainer.parameters().filter { $0.value.contains { !$0.isFinite } }.map { $0.key })
        if !bad.isEmpty { // never replace the last good checkpoint with a broken state
            throw DivergedError(
                "at step \(step) the trained tensors are not finite (\(Py.repr(Array(bad.prefix(3))))); the checkpoint was not written, " +
                    "the last good one is \(store.latest()?.path ?? "null"). Lower the learning rate and resume or restart.")
        }
        let meta = JSONObject([
            (TrainingLoop.bundleKey, .string(bundleId)),
            (TrainingLoop.examplesKey, .int(examples)),
            (TrainingLoop.phaseKey, .int(phase)),
            (TrainingLoop.masksKey, .array(masks.map { JSON($0) })),
            (TrainingLoop.positionKey, stream.position.toJson()),
            (TrainingLoop.lossesKey, JSON(losses)),
            (TrainingLoop.badStepsKey, .int(badSteps)),
            (TrainingLoop.ranksKey, TrainingLoop.ranksJson(ranks)),
            (TrainingLoop.eventsKey, .array(events.map { .object($0) })),
            (TrainingLoop.reallocKey, reallocator?.state() ?? .null),
            (TrainingLoop.evalBeforeKey, evalBefore.map { r -> JSON in
                [TrainingLoop.evalAccuracy: .double(r.accuracy), TrainingLoop.evalLoss: .double(r.loss), TrainingLoop.evalExamples: .int(r.examples)]
            } ?? .null),
        ])
        let dir = try store.save(step, meta) { try trainer.save($0) }
        listener.onCheckpoint(step, dir)
        return dir
    }

    private func restore(_ meta: JSONObject, _ dir: URL) throws {
        if meta[TrainingLoop.bundleKey] != .string(bundleId) {
            throw CheckpointError("checkpoint \(dir.path) belongs to bundle \(Py.repr(meta[TrainingLoop.bundleKey])), not \(Py.repr(bundleId)); use a new run directory for this bundle.")
        }
        guard let positionJson = meta[TrainingLoop.positionKey]?.object else { throw CheckpointError("checkpoint \(dir.path) has no data position") }
        do {
            let position = try StreamPosition.fromJson(positionJson)
            if position.seed != options.seed || (try? Py.toInt(meta[TrainingLoop.examplesKey])) != examples {
                throw CheckpointError(
                    "checkpoint \(dir.path) trained on \(Py.str(meta[TrainingLoop.examplesKey])) examples with seed \(position.seed); resume with the same data " +
                        "and seed (\(examples) examples, seed \(options.seed) now), or use a new run directory.")
            }
            step = try Py.toInt(meta[CheckpointStore.stepKey])
            phase = try Py.toInt(meta[TrainingLoop.phaseKey])
            masks = try (meta[TrainingLoop.masksKey]?.array ?? []).map { m in try (m.array ?? []).map { Float(try Py.toFloat($0)) } }
            stream.position = position
            losses = try (meta[TrainingLoop.lossesKey]?.array ?? []).map { Float(try Py.toFloat($0)) }
            badSteps = try Py.toInt(meta[TrainingLoop.badStepsKey])
            // Checkpoints written before re-allocation existed hold no ranks: the phase's.
            if let saved = meta[TrainingLoop.ranksKey]?.object {
                var r: Ranks = [:]
                for (m, slots) in saved { for (s, v) in slots.object ?? JSONObject() { r[m, default: [:]][s] = try Py.toInt(v) } }
                ranks = r
            } else {
                ranks = schedule.ranks(phase)
            }
            events = (meta[TrainingLoop.eventsKey]?.array ?? []).compactMap { $0.object }
            if let state = meta[TrainingLoop.reallocKey]?.object { try reallocator?.loadState(state) }
            evalBefore = try meta[TrainingLoop.evalBeforeKey]?.object.map { e in
                Evaluate.Report(accuracy: try Py.toFloat(e[TrainingLoop.evalAccuracy]), loss: try Py.toFloat(e[TrainingLoop.evalLoss]),
                                examples: try Py.toInt(e[TrainingLoop.evalExamples]))
            }
        } catch let e as Py.CastError {
            throw CheckpointError("checkpoint \(dir.path) has a malformed \(CheckpointStore.metaFile) (\(e.message)); delete it to fall back to the previous checkpoint.")
        }
    }
}
