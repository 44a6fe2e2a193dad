import Foundation
import XCTest
@testable import PersonalizationCore

/// The loop's on-device re-allocation against fixtures/realloc_loop.json (runtime/realloc.py's
/// `Reallocator` driven as runtime/trainer.py drives it), and its eval before/after.
final class TrainingReallocTests: XCTestCase {
    var fx = JSONObject()
    var schedule: RankSchedule!
    var trainable: [Trainable] = []
    var factors: [Float] = []
    var steps = 0

    override func setUpWithError() throws {
        fx = try Fixtures.json("realloc_loop.json")
        schedule = try RankSchedule.read(fx["schedule"])
        trainable = fx["trainable"]!.list.map { o in
            Trainable(name: o[Contract.TrainableKey.name]!.str, module: o[Contract.TrainableKey.module]!.str,
                      slot: o[Contract.TrainableKey.slot]!.str, role: o[Contract.TrainableKey.role]!.str,
                      param: o[Contract.TrainableKey.param]!.str, shape: o[Contract.TrainableKey.shape]!.ints,
                      dtype: o[Contract.TrainableKey.dtype]!.str)
        }
        factors = fx["grad_factors"]!.floats
        steps = fx["steps"]!.i
    }

    /// make_fixtures.py's `grid(shape, salt)`: k/64 in [-1, 1), exact in float32.
    static func grid(_ n: Int, _ salt: Int) -> [Float] { (0..<n).map { Float((($0 * 37 + salt * 11) % 128) - 64) / 64 } }

    func tensor(_ unit: String, _ role: String) -> Trainable { trainable.first { Units.key($0.module, $0.slot) == unit && $0.role == role }! }

    final class Log {
        var calls = 0
        var masks: [[Double]] = []
        var written: [[String: [Float]]] = []
    }

    /// Gradients of tensor i at step s: `grid(shape, 3 i + s) * factor`; an applied step is SGD with lr 0.125.
    final class Fake: Trainer {
        let log: Log
        let trainable: [Trainable]
        let factors: [Float]
        var params: [String: [Float]] = [:]
        private var grads: [String: [Float]] = [:]

        init(_ log: Log, _ trainable: [Trainable], _ factors: [Float]) {
            self.log = log
            self.trainable = trainable
            self.factors = factors
            for (i, t) in trainable.enumerated() { params[t.name] = TrainingReallocTests.grid(t.numel, i) }
        }

        func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float {
            let s = log.calls
            log.calls += 1
            log.masks.append(masks.map { Double($0.reduce(0, +)) })
            grads = [:]
            for (i, t) in trainable.enumerated() { grads[t.name] = TrainingReallocTests.grid(t.numel, 3 * i + s).map { $0 * factors[i % factors.count] } }
            return 1
        }

        func gradients() throws -> [String: [Float]] { grads }

        func applyStep() throws {
            for (name, g) in grads { params[name] = zip(params[name]!, g).map { $0 - 0.125 * $1 } }
        }

        func discardStep() throws {}

        func setParameters(_ values: [String: [Float]]) throws {
            log.written.append(values)
            for (k, v) in values { params[k] = v }
        }

        func save(_ dir: URL) throws {
            var tensors: [String: Tensor] = [:]
            for (k, v) in params { tensors[k] = try Tensor(trainable.first { $0.name == k }!.shape, v) }
            try Data(Safetensors.bytes(tensors, metadata: [:])).write(to: dir.appendingPathComponent("p.safetensors"))
        }

        func restore(_ dir: URL) throws {
            for (k, t) in try Safetensors.read(dir.appendingPathComponent("p.safetensors")).0 { params[k] = t.data }
        }

        func parameters() throws -> [String: [Float]] { params }
    }

    private func loop(_ dir: URL, _ log: Log, every: Int = 100, cancelled: @escaping () -> Bool = { false }) throws -> TrainingLoop {
        let trainable = self.trainable, factors = self.factors
        return try TrainingLoop(
            schedule: schedule, bundleId: "bundle-h", examples: 7, batchSize: 3,
            batchOf: { Batch(pixelValues: [], inputIds: $0.map { Int64($0) }, labels: $0.map { _ in 0 }, batchSize: $0.count, imageSize: 0, textLen: 1) },
            options: try TrainOptions(steps: steps, checkpointEvery: every, seed: fx["seed"]!.i, onDeviceRealloc: true, reallocEvery: fx["every"]!.i),
            store: try CheckpointStore(dir),
            factory: { from in
                let f = Fake(log, trainable, factors)
                if let from { try f.restore(from) }
                return f
            },
            cancelled: cancelled, trainable: trainable)
    }

    private func runDir() throws -> URL { try Fixtures.tempDir("realloc-").appendingPathComponent("run") }

    private func sha(_ v: [Float]) -> String {
        var bytes: [UInt8] = []
        for x in v { let b = x.bitPattern; for i in 0..<4 { bytes.append(UInt8((b >> (8 * UInt32(i))) & 0xFF)) } }
        return Checksums.sha256Of(bytes: bytes)
    }

    private func assertEvents(_ expected: [JSON], _ actual: [JSONObject]) {
        XCTAssertEqual(expected.count, actual.count, "events")
        for (e, a) in zip(expected, actual) {
            XCTAssertEqual(e.obj.keys, a.keys)
            for (k, v) in e.obj {
                if case .double(let x) = v { assertClose(x, a[k]?.number ?? .nan, "event \(k)") } else { XCTAssertEqual(Json.dumps(v), Json.dumps(a[k] ?? .null), "event \(k)") }
            }
        }
    }

    private func assertFinal(_ result: TrainResult) {
        XCTAssertEqual(steps, result.step)
        assertEvents(fx["events"]!.list, result.events)
        var ranks: Ranks = [:]
        for (m, slots) in fx["final_ranks"]!.obj { ranks[m] = slots.intMap }
        XCTAssertEqual(ranks, result.ranks)
        for (name, hash) in fx["final_params_sha256"]!.obj { XCTAssertEqual(hash.str, sha(result.parameters[name]!), "final \(name)") }
    }

    private func expectedMasks() -> [[Double]] { fx["masks"]!.list.map { $0.doubles } }

    func testUniformDrawsAreNumpys() throws {
        // The grown rows are numpy's default_rng([seed, step]).uniform(-b, b).astype(float32), bit for bit.
        for g in fx["grown"]!.list {
            let rng = NumpyRandom.of(fx["seed"]!.i, g["step"]!.i)
            for (unit, rows) in g["down_rows"]!.obj {
                let fanIn = tensor(unit, Contract.roleDown).shape[1]
                let expected = rows.floats
                assertBitIdentical(expected, Reallocator.growInit(rng, expected.count / fanIn, fanIn), "grown \(unit)")
            }
        }
    }

    func testReallocationEventsMasksAndGrownValuesAreTheSdks() throws {
        let log = Log()
        let result = try loop(try runDir(), log).run()
        assertFinal(result)
        XCTAssertEqual(expectedMasks(), log.masks)
        // What the loop wrote back at each applied decision: the grown down rows, up columns zero.
        let grown = fx["grown"]!.list
        XCTAssertEqual(grown.count, log.written.count)
        for (g, written) in zip(grown, log.written) {
            let event = fx["events"]!.list.first { $0["step"] == g["step"] }!.obj
            for (unit, rows) in g["down_rows"]!.obj {
                let ab = event["changed"]![unit]!.ints
                let down = tensor(unit, Contract.roleDown), up = tensor(unit, Contract.roleUp)
                let fanIn = down.shape[1]
                assertBitIdentical(rows.floats, Array(written[down.name]![(ab[0] * fanIn)..<(ab[1] * fanIn)]), "grown \(unit)")
                let w = written[up.name]!
                let rMax = up.shape[1]
                for o in 0..<up.shape[0] { for c in ab[0]..<ab[1] { XCTAssertEqual(0, w[o * rMax + c], "up[\(o), \(c)] of \(unit)") } }
            }
        }
    }

    func testAResumedRunReallocatesAsAnUninterruptedOne() throws {
        for cancelAt in [3, 5] { // just before the step-3 decision; between decisions (the EMA comes from the checkpoint)
            let dir = try runDir()
            let log = Log()
            let first = try loop(dir, log, every: 2, cancelled: { log.calls == cancelAt }).run()
            XCTAssertEqual(.cancelled, first.stop)
            let sq = try CheckpointStore(dir).meta(first.checkpoint!)[TrainingLoop.reallocKey]![RankSignals.stateSq]!.obj
            XCTAssertEqual(Set(fx["ema_sq"]!.list[cancelAt - 1].obj.keys), Set(sq.keys))
            let second = try loop(dir, log, every: 2).run()
            XCTAssertEqual(cancelAt, second.resumedFrom)
            assertFinal(second)
            XCTAssertEqual(expectedMasks(), log.masks)
        }
    }

    func testTheEmaIsTheSdksAfterEveryStep() throws {
        let dir = try runDir()
        _ = try loop(dir, Log(), every: 1).run()
        let store = try CheckpointStore(dir)
        for ckpt in store.complete() { // the newest two are kept
            let meta = try store.meta(ckpt)
            let s = try Py.toInt(meta[CheckpointStore.stepKey])
            let sq = meta[TrainingLoop.reallocKey]![RankSignals.stateSq]!.obj
            let expected = fx["ema_sq"]!.list[s - 1].obj
            XCTAssertEqual(Set(expected.keys), Set(sq.keys))
            for (u, v) in expected { assertClose(v.d, sq[u]!.d, "EMA of \(u) at step \(s)") }
        }
    }
}
