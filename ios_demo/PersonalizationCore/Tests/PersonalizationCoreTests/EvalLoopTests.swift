import Foundation
import XCTest
@testable import PersonalizationCore

/// The loop's eval before/after on a held-out set: padded last batch, resume, listener.
final class EvalLoopTests: XCTestCase {
    final class Counter { var calls = 0 }

    /// After training the answer to example i is right when i % 3 != 0 or i == 6; before, never.
    final class EvalFake: Trainer {
        let counter: Counter
        var trained = false
        init(_ counter: Counter) { self.counter = counter }
        func forwardBackward(_ batch: Batch, _ masks: [[Float]]) throws -> Float { counter.calls += 1; return 1 }
        func applyStep() throws { trained = true }
        func discardStep() throws {}
        func save(_ dir: URL) throws {}
        func parameters() throws -> [String: [Float]] { [:] }
        func evaluate(_ batch: Batch, _ masks: [[Float]]) throws -> (Float, [Float]) {
            // [B, T=2, V=2], labels [ignore, 1]: the logits at t=0 favour 1 when the answer is right.
            var logits = [Float](repeating: 0, count: batch.batchSize * 4)
            for b in 0..<batch.batchSize {
                let i = Int(batch.inputIds[2 * b])
                let right = trained && (i % 3 != 0 || i == 6)
                logits[b * 4 + (right ? 1 : 0)] = 1
            }
            return (Float(batch.inputIds[0]), logits) // loss: the batch's first index
        }
    }

    final class Reports: TrainListener {
        var seen: [(Int, Double)] = []
        func onEval(_ step: Int, _ report: Evaluate.Report) { seen.append((step, report.accuracy)) }
    }

    func testEvalBeforeAndAfterCountsPaddedRowsOnce() throws {
        var batches: [[Int]] = []
        let evalSet = EvalSet(count: 7) { idx in
            batches.append(idx)
            return Batch(pixelValues: [], inputIds: (0..<(2 * idx.count)).map { Int64(idx[$0 / 2]) },
                         labels: (0..<(2 * idx.count)).map { $0 % 2 == 0 ? Int64(Contract.ignoreIndex) : 1 },
                         batchSize: idx.count, imageSize: 0, textLen: 2)
        }
        let schedule = RankSchedule(
            allocator: "uniform", adapter: Contract.adapterLora, budgetParams: 40,
            modules: OrderedDict([("m", OrderedDict([("s", SlotInfo(rMax: 4, paramsPerRank: 10, scale: 2))]))]),
            phases: [Phase(startStep: 0, ranks: ["m": ["s": 4]])], maskInputs: [MaskInput(module: "m", slot: "s", rMax: 4)],
            dropout: 0, performanceModel: nil)
        let dir = try Fixtures.tempDir("eval-").appendingPathComponent("run")
        let counter = Counter()
        let reports = Reports()
        func evalLoop(_ cancelled: @escaping () -> Bool = { false }) throws -> TrainingLoop {
            try TrainingLoop(
                schedule: schedule, bundleId: "bundle-e", examples: 7, batchSize: 3,
                batchOf: { Batch(pixelValues: [], inputIds: $0.map { Int64($0) }, labels: $0.map { _ in 0 }, batchSize: $0.count, imageSize: 0, textLen: 1) },
                options: try TrainOptions(steps: 4, checkpointEvery: 2), store: try CheckpointStore(dir),
                factory: { from in let f = EvalFake(counter); if from != nil { f.trained = true }; return f },
                cancelled: cancelled, listener: reports, evalSet: evalSet)
        }
        let first = try evalLoop({ counter.calls == 2 }).run()
        XCTAssertEqual(0, first.evalBefore?.accuracy)
        XCTAssertNil(first.evalAfter) // cancelled: no eval at the end
        XCTAssertEqual([[0, 1, 2], [3, 4, 5], [6, 6, 6]], batches)
        let second = try evalLoop().run()
        XCTAssertEqual(0, second.evalBefore?.accuracy) // read back from the checkpoint, not re-run
        XCTAssertEqual(6, batches.count)
        let after = try XCTUnwrap(second.evalAfter)
        XCTAssertEqual(7, after.examples)
        XCTAssertEqual(5.0 / 7, after.accuracy, accuracy: 1e-12) // 1, 2, 4, 5, 6: the padded copies of 6 count once
        XCTAssertEqual((0.0 * 3 + 3.0 * 3 + 6.0 * 1) / 7, after.loss, accuracy: 1e-12)
        // The listener hears both reports as they happen (the resumed run re-reports the saved one).
        XCTAssertEqual([0, 0, 4], reports.seen.map { $0.0 })
        XCTAssertEqual([0, 0, 5.0 / 7], reports.seen.map { $0.1 })
    }
}

/// The head layout scores a closed answer list through the same `Evaluate` as a language model.
final class AnswerHeadTests: XCTestCase {
    func testHeadBatchesScoreThroughEvaluate() throws {
        let manifest = try Manifest.validateBundle(Fixtures.file("bundle"))
        let tokenizer = try WordLevelTokenizer.load(Fixtures.file("bundle").appendingPathComponent(manifest.inputSpec.tokenizerFile))
        let encoder = InputEncoder(manifest.inputSpec, tokenizer)
        let answers = ["zero", "one", "two"]
        let (ids, labels) = try AnswerHead.text(encoder, "what digit is this ?", "Two", answers: answers)
        XCTAssertEqual(try encoder.prompt("what digit is this ?").0, ids) // the pad id is the manifest's
        XCTAssertEqual(2, labels[1])
        XCTAssertEqual(1, labels.filter { $0 != Int64(Contract.ignoreIndex) }.count)
        let batch = Batch(pixelValues: [], inputIds: ids + ids, labels: labels + labels.enumerated().map { $0.offset == 1 ? 0 : $0.element },
                          batchSize: 2, imageSize: 0, textLen: ids.count)
        XCTAssertEqual([2, 0], AnswerHead.classes(batch))
        let probs: [[Float]] = [[0.1, 0.2, 0.7], [0.2, 0.5, 0.3]]
        let correct = try Evaluate.correctAnswers(AnswerHead.logits(probs: probs, textLen: ids.count), batch.labels, batch: 2, textLen: ids.count)
        XCTAssertEqual([true, false], correct)
        assertClose((-log(0.7) - log(0.2)) / 2, Double(AnswerHead.loss(probs: probs, classes: [2, 0])), "loss", tol: 1e-6)
        XCTAssertThrowsError(try AnswerHead.index(answers, "seven", lowercase: true))
    }
}
