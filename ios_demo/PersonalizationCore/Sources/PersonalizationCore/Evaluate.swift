import Foundation

/// Accuracy with a bundle's eval graph (runtime/evaluate.py). An answer counts as correct when every
/// labelled token (the answer and its `<eos>`) is the argmax of the logits one position earlier:
/// with teacher forcing this equals exact match under greedy decoding.
public enum Evaluate {
    /// `correct_answers`: `[B]`, whether every labelled `labels[:, t + 1]` is `argmax logits[:, t]`
    /// (`logits` `[B, T, V]`, `labels` `[B, T]`, row-major). Ties go to the first index and a NaN
    /// wins, as numpy's argmax.
    public static func correctAnswers(_ logits: [Float], _ labels: [Int64], batch: Int, textLen: Int,
                                      ignoreIndex: Int = labelIgnoreIndex) throws -> [Bool] {
        if labels.count != batch * textLen { throw ConfigError("labels hold \(labels.count) values; expected \(batch) x \(textLen)") }
        if logits.count % (batch * textLen) != 0 {
            throw ConfigError("logits hold \(logits.count) values, not a multiple of \(batch) x \(textLen)")
        }
        let vocab = logits.count / (batch * textLen)
        return (0..<batch).map { b in
            (0..<(textLen - 1)).allSatisfy { t in
                let target = labels[b * textLen + t + 1]
                return target == Int64(ignoreIndex) || Int64(argmax(logits, (b * textLen + t) * vocab, vocab)) == target
            }
        }
    }

    private static func argmax(_ a: [Float], _ from: Int, _ n: Int) -> Int {
        var best = 0
        for i in 0..<n {
            let v = a[from + i]
            if v.isNaN { return i }
            if v > a[from + best] { best = i }
        }
        return best
    }

    public struct Report: Equatable {
        public let accuracy: Double
        public let loss: Double
        public let examples: Int
    }

    /// `evaluate_bundle`'s loop: batches of the bundle's fixed size, the last padded by repeating
    /// its last example (padded rows not counted), accuracy over all examples and the mean loss
    /// weighted by real rows.
    public static func run(_ trainer: Trainer, count: Int, batchSize: Int, ignoreIndex: Int, masks: [[Float]],
                           batchOf: ([Int]) throws -> Batch) throws -> Report {
        if count < 1 { throw DataError("the eval data has no examples.") }
        var correct = 0
        var weighted = 0.0
        var start = 0
        while start < count {
            let real = min(batchSize, count - start)
            let batch = try batchOf((0..<batchSize).map { start + min($0, real - 1) })
            let (loss, logits) = try trainer.evaluate(batch, masks)
            correct += try correctAnswers(logits, batch.labels, batch: batch.batchSize, textLen: batch.textLen, ignoreIndex: ignoreIndex)
                .prefix(real).filter { $0 }.count
            weighted += Double(loss) * Double(real)
            start += batchSize
        }
        return Report(accuracy: Double(correct) / Double(count), loss: weighted / Double(count), examples: count)
    }
}
