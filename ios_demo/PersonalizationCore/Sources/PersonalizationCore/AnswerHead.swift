import Foundation

/// Batches for a head over a closed answer list (Core ML `coreml` bundles, iOS only): the
/// backbone reads `<bos> prompt <pad>...` (the pad id from the manifest, no answer), and the answer
/// is a class index. So that the core's `Evaluate` scores a head exactly as it scores a language
/// model, the index sits where an LM's first answer token would be scored: `labels[b, 1]`, every
/// other label the ignore index, and a head's logits are laid out `[B, T, K]` with its scores at
/// `t = 0` (`logits(probs:batch:textLen:)`).
public enum AnswerHead {
    /// The index of `answer` in `answers` (compared after the spec's lowercasing), or a clear error.
    public static func index(_ answers: [String], _ answer: String, lowercase: Bool) throws -> Int {
        let norm = { (s: String) in (lowercase ? s.lowercased() : s).trimmingCharacters(in: .whitespaces) }
        guard let i = answers.firstIndex(where: { norm($0) == norm(answer) }) else {
            throw DataError("answer \(Py.repr(answer)) is not one of the head's \(answers.count) answers \(Py.repr(Array(answers.prefix(10))))" +
                "\(answers.count > 10 ? " ..." : ""); a Core ML bundle learns a closed answer list: give one of them, or re-export with it.")
        }
        return i
    }

    /// `(input_ids, labels)` of one example, both `[max_text_len]`.
    public static func text(_ encoder: InputEncoder, _ question: String, _ answer: String, answers: [String]) throws -> ([Int64], [Int64]) {
        let (ids, _) = try encoder.prompt(question)
        var labels = [Int64](repeating: Int64(encoder.ids.ignoreIndex), count: ids.count)
        labels[1] = Int64(try index(answers, answer, lowercase: encoder.spec.lowercase))
        return (ids, labels)
    }

    /// The class index of each row of a head batch.
    public static func classes(_ batch: Batch) -> [Int] { (0..<batch.batchSize).map { Int(batch.labels[$0 * batch.textLen + 1]) } }

    /// Head scores `[B, K]` as `[B, T, K]` logits with the scores at `t = 0`, zeros elsewhere.
    public static func logits(probs: [[Float]], textLen: Int) -> [Float] {
        var out: [Float] = []
        for row in probs {
            out += row
            out += [Float](repeating: 0, count: row.count * (textLen - 1))
        }
        return out
    }

    /// Mean cross-entropy `-log p[class]` of head probabilities (what the head's update minimises).
    public static func loss(probs: [[Float]], classes: [Int]) -> Float {
        let terms = zip(probs, classes).map { -log(Double(max($0[$1], Float.leastNormalMagnitude))) }
        return Float(terms.reduce(0, +) / Double(max(terms.count, 1)))
    }
}
