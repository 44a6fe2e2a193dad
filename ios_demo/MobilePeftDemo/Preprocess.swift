import CoreGraphics
import Foundation
import ImageIO

/// Input-layout constants that live in the SDK's core, not in the bundle contract (except
/// `ignoreIndex`, the contract's, as a label value); `tests/demo_apps/test_contract_mirror.py` checks
/// them against mobile_peft/core/{spec,datasets}.py.
enum PreprocessDefaults {
    static let ignoreIndex = Int64(Contract.ignoreIndex) // labels not scored
    static let padToken = "<pad>"
    static let bosToken = "<bos>"
    static let eosToken = "<eos>"
    static let questionPlaceholder = "{question}"
    static let annotationsFile = "annotations.jsonl" // mobile_peft.core.datasets.ANNOTATIONS_FILE
    static let imagesDir = "images"
}

/// The bundled `tokenizer.json`, WordLevel models only, applied as the `tokenizers` library does for
/// the SDK's word tokeniser: added tokens verbatim; `Lowercase`; `Whitespace` (`\w+|[^\w\s]+`,
/// Unicode classes, as ICU's NSRegularExpression has them); `Punctuation` (each mark its own piece);
/// vocabulary lookup with `unk_token` fallback. Other model or pre-tokeniser types are refused.
struct WordTokenizer {
    private let vocab: [String: Int]
    private let unkId: Int
    private let lowercase: Bool
    private let punctuationSplit: Bool
    private let added: [String]
    private static let whitespace = try! NSRegularExpression(pattern: #"\w+|[^\w\s]+"#)

    func id(of token: String) -> Int? { vocab[token] }

    static func load(_ url: URL) throws -> WordTokenizer {
        guard let root = (try? JSONSerialization.jsonObject(with: Data(contentsOf: url))) as? [String: Any],
              let model = root["model"] as? [String: Any] else { throw BundleError("\(url.lastPathComponent) is not a tokenizers JSON file") }
        guard model["type"] as? String == "WordLevel", let vocab = model["vocab"] as? [String: Int] else {
            throw BundleError("\(url.lastPathComponent): model type \(model["type"] ?? "nil") is not supported (WordLevel only)")
        }
        guard let unk = vocab[model["unk_token"] as? String ?? ""] else { throw BundleError("\(url.lastPathComponent): unk_token not in vocabulary") }
        func types(_ node: Any?, _ listKey: String) -> [String] {
            guard let n = node as? [String: Any] else { return [] }
            if n["type"] as? String == "Sequence" { return (n[listKey] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String } }
            return [n["type"] as? String ?? ""]
        }
        let norm = types(root["normalizer"], "normalizers"), pre = types(root["pre_tokenizer"], "pretokenizers")
        guard Set(norm).isSubset(of: ["Lowercase"]), Set(pre).isSubset(of: ["Whitespace", "Punctuation"]), pre.contains("Whitespace") else {
            throw BundleError("\(url.lastPathComponent): normalizer \(norm) / pre_tokenizer \(pre) not supported")
        }
        let added = (root["added_tokens"] as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
            .filter { vocab[$0] != nil }.sorted { $0.count > $1.count }
        return WordTokenizer(vocab: vocab, unkId: unk, lowercase: norm.contains("Lowercase"),
                             punctuationSplit: pre.contains("Punctuation"), added: added)
    }

    // Rust: char::is_ascii_punctuation() || Unicode general category P*.
    private static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".unicodeScalars.contains(s) }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    private func pieces(_ word: String) -> [String] {
        guard punctuationSplit else { return [word] }
        var out: [String] = [], run = ""
        for s in word.unicodeScalars {
            if Self.isPunctuation(s) {
                if !run.isEmpty { out.append(run); run = "" }
                out.append(String(s))
            } else { run.unicodeScalars.append(s) }
        }
        if !run.isEmpty { out.append(run) }
        return out
    }

    func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            // The earliest added token (longest first at the same position) splits the text.
            var hit: (Range<Substring.Index>, String)?
            for token in added {
                if let r = rest.range(of: token), hit == nil || r.lowerBound < hit!.0.lowerBound { hit = (r, token) }
            }
            let plain = hit.map { rest[..<$0.0.lowerBound] } ?? rest
            let normalised = lowercase ? plain.lowercased() : String(plain)
            let ns = normalised as NSString
            for m in Self.whitespace.matches(in: normalised, range: NSRange(location: 0, length: ns.length)) {
                for piece in pieces(ns.substring(with: m.range)) { out.append(vocab[piece] ?? unkId) }
            }
            guard let found = hit else { break }
            out.append(vocab[found.1]!)
            rest = rest[found.0.upperBound...]
        }
        return out
    }
}

/// One annotation line of a folder data set (the SDK's `annotations.jsonl` format).
struct Example { let image: URL; let question: String; let answer: String }

/// Fixed-shape inputs of one training step; row-major, batch first.
struct Batch {
    var pixelValues: [Float] // [B, 3, S, S]
    var inputIds: [Int64]    // [B, T]
    var labels: [Int64]      // [B, T]
    var answers: [String]    // raw answers: the Core ML head's class labels
    let batchSize: Int, imageSize: Int, maxTextLen: Int
    var pixelShape: [NSNumber] { [batchSize, 3, imageSize, imageSize].map { NSNumber(value: $0) } }
    var textShape: [NSNumber] { [batchSize, maxTextLen].map { NSNumber(value: $0) } }
}

/// Model inputs exactly as mobile_peft/data/encode.py builds them from the manifest's input spec.
struct Preprocessor {
    let spec: InputSpec
    let tokenizer: WordTokenizer
    let padId: Int, bosId: Int, eosId: Int

    init(spec: InputSpec, tokenizer: WordTokenizer) throws {
        self.spec = spec
        self.tokenizer = tokenizer
        func special(_ role: String, _ token: String) throws -> Int {
            guard let id = spec.tokenIds[role] ?? tokenizer.id(of: token) else { throw BundleError("no id for the \(role) token '\(token)'") }
            return id
        }
        // input_spec.token_ids by Contract.TokenIdKey (the manifest check requires all of them); the
        // vocabulary ids of InputSpec's default token strings are only a fallback.
        padId = try special(Contract.TokenIdKey.pad, PreprocessDefaults.padToken)
        bosId = try special(Contract.TokenIdKey.bos, PreprocessDefaults.bosToken)
        eosId = try special(Contract.TokenIdKey.eos, PreprocessDefaults.eosToken)
    }

    private func normalise(_ text: String) -> String { spec.lowercase ? text.lowercased() : text }

    /// Python's `prompt_template.format(question=q)` for templates whose only field is {question}.
    func prompt(_ question: String) -> String {
        spec.promptTemplate.replacingOccurrences(of: PreprocessDefaults.questionPlaceholder, with: "\u{0}")
            .replacingOccurrences(of: "{{", with: "{").replacingOccurrences(of: "}}", with: "}")
            .replacingOccurrences(of: "\u{0}", with: normalise(question))
    }

    /// (input_ids, labels) [max_text_len]: `<bos> prompt answer <eos> <pad>...`; labels -100 except answer + `<eos>`.
    func encodeText(question: String, answer: String) throws -> ([Int64], [Int64]) {
        let promptIds = tokenizer.encode(prompt(question))
        let answerIds = tokenizer.encode(normalise(answer))
        guard !answerIds.isEmpty else { throw BundleError("answer '\(answer)' encodes to no tokens") }
        let ids = [bosId] + promptIds + answerIds + [eosId]
        guard ids.count <= spec.maxTextLen else {
            throw BundleError("question '\(question)' with answer '\(answer)' needs \(ids.count) tokens but max_text_len=\(spec.maxTextLen)")
        }
        var inputIds = [Int64](repeating: Int64(padId), count: spec.maxTextLen)
        var labels = [Int64](repeating: PreprocessDefaults.ignoreIndex, count: spec.maxTextLen)
        for (i, id) in ids.enumerated() {
            inputIds[i] = Int64(id)
            if i >= 1 + promptIds.count { labels[i] = Int64(id) }
        }
        return (inputIds, labels)
    }

    /// torch `interpolate(mode="bilinear", align_corners=False, antialias=False)` on [C, H, W] planes.
    static func resizeBilinear(_ src: [Float], c: Int, h: Int, w: Int, outH: Int, outW: Int) -> [Float] {
        var out = [Float](repeating: 0, count: c * outH * outW)
        let sy = Float(h) / Float(outH), sx = Float(w) / Float(outW)
        for oy in 0..<outH {
            let fy = max((Float(oy) + 0.5) * sy - 0.5, 0)
            let y0 = Int(fy), y1 = y0 < h - 1 ? y0 + 1 : y0, ly = fy - Float(y0)
            for ox in 0..<outW {
                let fx = max((Float(ox) + 0.5) * sx - 0.5, 0)
                let x0 = Int(fx), x1 = x0 < w - 1 ? x0 + 1 : x0, lx = fx - Float(x0)
                for ch in 0..<c {
                    let b = ch * h * w
                    let top = src[b + y0 * w + x0] * (1 - lx) + src[b + y0 * w + x1] * lx
                    let bottom = src[b + y1 * w + x0] * (1 - lx) + src[b + y1 * w + x1] * lx
                    out[ch * outH * outW + oy * outW + ox] = top * (1 - ly) + bottom * ly
                }
            }
        }
        return out
    }

    /// RGB 0..1 planes [3, H, W] -> resized, `(x - mean) / std` per channel, [3, S, S].
    func encodePlanes(_ rgb: [Float], h: Int, w: Int) -> [Float] {
        let s = spec.imageSize
        var x = (h == s && w == s) ? rgb : Self.resizeBilinear(rgb, c: 3, h: h, w: w, outH: s, outW: s)
        for c in 0..<3 { for i in 0..<(s * s) { x[c * s * s + i] = (x[c * s * s + i] - spec.imageMean[c]) / spec.imageStd[c] } }
        return x
    }

    /// Decodes an image file to RGB planes. Drawn into an sRGB context without alpha: opaque images
    /// keep their bytes; transparent pixels are composited over black, where PIL's convert("RGB") just
    /// drops alpha (keep training images opaque).
    func encodeImage(_ url: URL) throws -> [Float] {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else { throw BundleError("cannot decode image \(url.path)") }
        let w = image.width, h = image.height
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let drawn: Bool = rgba.withUnsafeMutableBytes { buf in
            guard let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                      space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                      bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard drawn else { throw BundleError("cannot draw image \(url.path)") }
        var planes = [Float](repeating: 0, count: 3 * h * w)
        for i in 0..<(h * w) {
            for c in 0..<3 { planes[c * h * w + i] = Float(rgba[i * 4 + c]) / 255 }
        }
        return encodePlanes(planes, h: h, w: w)
    }

    func batch(_ examples: [Example]) throws -> Batch {
        let s = spec.imageSize, t = spec.maxTextLen
        var b = Batch(pixelValues: [], inputIds: [], labels: [], answers: examples.map(\.answer), batchSize: examples.count, imageSize: s, maxTextLen: t)
        b.pixelValues.reserveCapacity(examples.count * 3 * s * s)
        for ex in examples {
            b.pixelValues += try encodeImage(ex.image)
            let (ids, labels) = try encodeText(question: ex.question, answer: ex.answer)
            b.inputIds += ids
            b.labels += labels
        }
        return b
    }

    /// `annotations.jsonl` + `images/` (mobile_peft/data/folder.py); image paths relative to the folder or images/.
    static func loadFolder(_ dir: URL) throws -> [Example] {
        let ann = dir.appendingPathComponent(PreprocessDefaults.annotationsFile)
        guard let text = try? String(contentsOf: ann, encoding: .utf8) else {
            throw BundleError("\(ann.path) not found; a data folder needs \(PreprocessDefaults.annotationsFile) and \(PreprocessDefaults.imagesDir)/")
        }
        var out: [Example] = [], problems: [String] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let name = o["image"] as? String, let q = o["question"] as? String, let a = o["answer"] as? String else {
                problems.append("line \(n + 1): expected {\"image\", \"question\", \"answer\"}"); continue
            }
            let candidates = [dir.appendingPathComponent(name), dir.appendingPathComponent(PreprocessDefaults.imagesDir).appendingPathComponent(name)]
            guard let img = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
                problems.append("line \(n + 1): image '\(name)' not found"); continue
            }
            out.append(Example(image: img, question: q, answer: a))
        }
        if !problems.isEmpty { throw BundleError("\(ann.path):\n  - " + problems.joined(separator: "\n  - ")) }
        return out
    }
}
