import Foundation
import XCTest
@testable import PersonalizationCore

/// The training loop over a fake `Trainer`: checkpoints, resume, cancel, bad steps.
final class TrainingLoopTests: XCTestCase {
    let module = "language_model.model.layers.0.self_attn.q_proj"
    let slot = Contract.slots[Contract.adapterLora]![0]
    lazy var schedule = RankSchedule(
        allocator: "uniform", adapter: Contract.adapterLora, budgetParams: 40,
        modules: OrderedDict([(module, OrderedDict([(slot, SlotInfo(rMax: 4, paramsPerRank: 10, scale: 2))]))]),
        phases: [Phase(startStep: 0, ranks: [module: [slot: 4]]), Phase(startStep: 5, ranks: [module: [slot: 2]])],
        maskInputs: [MaskInput(module: module, slot: slot, rMax: 4)], dropout: 0, performanceModel: nil)

    /// What every fake trainer of one test did, across re-opens.
    final class Log {
        var calls = 0
        var batches: [[Int64]] = []
        var masks: [Float] = []
        var discarded = 0
        var opened: [URL?] = []
    }

    /// Weights move by each applied batch's index sum and mask sum, so the final weights depend on
    /// exactly which batches were applied in which order, and under which phase.
    final class Fake: Trainer {
        let log: Log
        let lossAt: (Int) -> Float
        let gradsFinite: (Int) -> Bool
        let poisonAt: Int
        var w: [Float] = [0, 0]
        private var pending: [Float]?
        private var call = -1

        init(_ log: Log, _ lossAt: @escaping (Int) -> Float, _ gradsFinite: @escaping (Int) -> Bool, _ poisonAt: Int) {
            self.log = log
            self.lossAt = lossAt
            self.gradsFinite = gradsFinite
            self.poisonAt = poisonAt
        }

        func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float {
            call = log.calls
            log.calls += 1
            log.batches.append(batch.inputIds)
            log.masks.append(masks[0].reduce(0, +))
            pending = [Float(batch.inputIds.reduce(0, +)), masks[0].reduce(0, +)]
            return lossAt(call)
        }

        func gradientsFinite() throws -> Bool { gradsFinite(call) }

        func applyStep() throws {
            let g = pending!
            w = [w[0] + g[0], w[1] * 0.5 + g[1]]
            if call == poisonAt { w[0] = .nan }
            pending = nil
        }

        func discardStep() throws {
            pending = nil
            log.discarded += 1
        }

        func save(_ dir: URL) throws {
            try Data(Safetensors.bytes(["w": try Tensor([2], w)], metadata: [:])).write(to: dir.appendingPathComponent("w.safetensors"))
        }

        func restore(_ dir: URL) throws { w = try Safetensors.read(dir.appendingPathComponent("w.safetensors")).0["w"]!.data }

        func parameters() throws -> [String: [Float]] { ["w": w] }
    }

    private func batchOf(_ indices: [Int]) -> Batch {
        Batch(pixelValues: [], inputIds: indices.map { Int64($0) }, labels: indices.map { _ in 0 }, batchSize: indices.count, imageSize: 0, textLen: 1)
    }

    private func loop(_ runDir: URL, _ log: Log, steps: Int = 12, every: Int = 4, maxBad: Int = 5, seed: Int = 3, bundle: String = "bundle-a",
                      lossAt: @escaping (Int) -> Float = { 1 / Float($0 + 1) }, gradsFinite: @escaping (Int) -> Bool = { _ in true },
                      poisonAt: Int = -1, cancelled: @escaping () -> Bool = { false }) throws -> TrainingLoop {
        try TrainingLoop(
            schedule: schedule, bundleId: bundle, examples: 7, batchSize: 3, batchOf: { [unowned self] in self.batchOf($0) },
            options: try TrainOptions(steps: steps, checkpointEvery: every, seed: seed, maxBadSteps: maxBad),
            store: try CheckpointStore(runDir),
            factory: { from in
                log.opened.append(from)
                let f = Fake(log, lossAt, gradsFinite, poisonAt)
                if let from { try f.restore(from) }
                return f
            },
            cancelled: cancelled)
    }

    private func runDir() throws -> URL { try Fixtures.tempDir("run-").appendingPathComponent("run") }

    private func names(_ dir: URL) throws -> [String] { try CheckpointStore(dir).complete().map { $0.lastPathComponent } }

    func testACompleteRunCheckpointsOnCadenceAndKeepsTheNewest() throws {
        let dir = try runDir()
        let log = Log()
        let result = try loop(dir, log).run()
        XCTAssertEqual(.completed, result.stop)
        XCTAssertEqual(12, result.step)
        XCTAssertEqual(12, result.losses.count)
        XCTAssertNil(result.resumedFrom)
        XCTAssertEqual(["ckpt-00000008", "ckpt-00000012"], try names(dir))
        XCTAssertEqual(result.checkpoint?.lastPathComponent, try CheckpointStore(dir).latest()?.lastPathComponent)
        // The batches are the reference runtime's stream for (7 examples, batch 3, seed 3).
        let stream = try DataStream(size: 7, batchSize: 3, position: StreamPosition(seed: 3))
        XCTAssertEqual((0..<12).map { _ in stream.next().map { Int64($0) } }, log.batches)
        // Phase 1 (rank 2) from step 5 on: the masks the trainer saw.
        XCTAssertEqual([Float](repeating: 4, count: 5) + [Float](repeating: 2, count: 7), log.masks)
        XCTAssertEqual(2, result.masks[0].reduce(0, +))
    }

    func testACancelledRunResumesToTheSameWeightsAsAnUninterruptedOne() throws {
        let fullLog = Log()
        let full = try loop(try runDir(), fullLog).run()

        let dir = try runDir()
        let log = Log()
        var applied = 0
        let first = try loop(dir, log, lossAt: { applied = $0; return 1 / Float($0 + 1) }, cancelled: { log.calls == 6 }).run()
        XCTAssertEqual(.cancelled, first.stop)
        XCTAssertEqual(6, first.step)
        XCTAssertEqual("ckpt-00000006", first.checkpoint?.lastPathComponent)
        XCTAssertEqual(5, applied)

        let second = try loop(dir, log).run()
        XCTAssertEqual(6, second.resumedFrom)
        XCTAssertEqual(12, second.step)
        XCTAssertEqual(full.losses, second.losses)
        XCTAssertEqual(fullLog.batches, log.batches)
        XCTAssertEqual(full.parameters["w"], second.parameters["w"])
        XCTAssertEqual([nil, "ckpt-00000006"], log.opened.map { $0?.lastPathComponent })

        // Resuming a finished run trains nothing and writes nothing new.
        let third = try loop(dir, log).run()
        XCTAssertEqual(12, third.step)
        XCTAssertEqual(12, third.resumedFrom)
        XCTAssertEqual(["ckpt-00000008", "ckpt-00000012"], try names(dir))
    }

    func testCancellationIsCheckedBeforeEveryStep() throws {
        let dir = try runDir()
        let log = Log()
        let result = try loop(dir, log, cancelled: { true }).run()
        XCTAssertEqual(.cancelled, result.stop)
        XCTAssertEqual(0, log.calls)
        XCTAssertNil(result.checkpoint) // nothing trained, nothing written
        XCTAssertEqual([], try names(dir))
    }

    func testNonFiniteLossesAreNotAppliedButCounted() throws {
        let log = Log()
        let bad: Set<Int> = [2, 3]
        let result = try loop(try runDir(), log, lossAt: { bad.contains($0) ? .nan : 1 }).run()
        XCTAssertEqual(12, result.step)
        XCTAssertEqual(2, result.badSteps)
        XCTAssertEqual(2, log.discarded)
        XCTAssertTrue(result.losses[2].isNaN && result.losses[3].isNaN)
        // Same weights as applying every batch but those two.
        var w: [Float] = [0, 0]
        for (i, b) in log.batches.enumerated() where !bad.contains(i) { w = [w[0] + Float(b.reduce(0, +)), w[1] * 0.5 + log.masks[i]] }
        XCTAssertEqual(w, result.parameters["w"])
    }

    func testNonFiniteGradientsAreBadStepsToo() throws {
        let log = Log()
        let result = try loop(try runDir(), log, gradsFinite: { $0 != 4 }).run()
        XCTAssertEqual(1, result.badSteps)
        XCTAssertEqual(1, log.discarded)
    }

    func testTooManyBadStepsStopTheRunWithTheLastGoodCheckpointIntact() throws {
        let dir = try runDir()
        do {
            _ = try loop(dir, Log(), every: 1, maxBad: 2, lossAt: { $0 >= 1 ? .infinity : 1 }).run()
            XCTFail("the run did not stop")
        } catch let e as DivergedError {
            XCTAssertTrue(e.message.hasPrefix("3 training steps had a non-finite loss or gradient (the last at step 4; maxBadSteps is 2)"), e.message)
        }
        let store = try CheckpointStore(dir)
        XCTAssertEqual("ckpt-00000003", store.latest()?.lastPathComponent)
        XCTAssertEqual(.int(3), try store.meta(store.latest()!)[CheckpointStore.stepKey])
        XCTAssertEqual(.int(2), try store.meta(store.latest()!)[TrainingLoop.badStepsKey])
    }

    func testNonFiniteWeightsAreNeverCheckpointed() throws {
        let dir = try runDir()
        do {
            _ = try loop(dir, Log(), poisonAt: 5).run()
            XCTFail("a NaN weight was checkpointed")
        } catch let e as DivergedError {
            XCTAssertTrue(e.message.hasPrefix("at step 8 the trained tensors are not finite (['w'])"), e.message)
        }
        XCTAssertEqual("ckpt-00000004", try CheckpointStore(dir).latest()?.lastPathComponent)
    }

    func testCheckpointsOfAnotherRunAreRefused() throws {
        let dir = try runDir()
        _ = try loop(dir, Log(), steps: 4).run()
        for (what, seed, bundle) in [("another bundle", 3, "bundle-b"), ("another seed", 9, "bundle-a")] {
            do {
                _ = try loop(dir, Log(), seed: seed, bundle: bundle).run()
                XCTFail("\(what) resumed")
            } catch let e as CheckpointError {
                XCTAssertTrue(e.message.contains(dir.path), what)
            }
        }
        do {
            _ = try loop(dir, Log()).run(resume: false)
            XCTFail("a fresh run over checkpoints started")
        } catch let e as CheckpointError {
            XCTAssertTrue(e.message.contains("already holds checkpoints"))
        }
    }

    func testAHalfWrittenCheckpointIsIgnored() throws {
        let dir = try runDir()
        _ = try loop(dir, Log(), steps: 4).run()
        let store = try CheckpointStore(dir)
        let fm = FileManager.default
        try fm.createDirectory(at: store.root.appendingPathComponent("\(CheckpointStore.tmpPrefix)00000008-1"), withIntermediateDirectories: true) // killed while writing
        try fm.createDirectory(at: store.root.appendingPathComponent("\(CheckpointStore.prefix)00000009"), withIntermediateDirectories: true) // never committed
        XCTAssertEqual("ckpt-00000004", store.latest()?.lastPathComponent)
        let result = try loop(dir, Log(), steps: 6).run()
        XCTAssertEqual(4, result.resumedFrom)
        XCTAssertFalse(try fm.contentsOfDirectory(atPath: store.root.path).contains { $0.hasPrefix(CheckpointStore.tmpPrefix) })
    }

    func testOptionsAreChecked() {
        let cases: [() throws -> TrainOptions] = [
            { try TrainOptions(steps: 0) }, { try TrainOptions(steps: 5, checkpointEvery: 0) }, { try TrainOptions(steps: 5, maxBadSteps: -1) },
        ]
        for bad in cases {
            do {
                _ = try bad()
                XCTFail("accepted")
            } catch let e as ConfigError {
                XCTAssertTrue(e.message.contains("expected"))
            } catch {
                XCTFail("\(error)")
            }
        }
    }
}
