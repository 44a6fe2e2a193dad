import Foundation

/// One decoded image: `height` x `width` x `channels` (1 grey or 3 RGB) values in 0..1, row-major
/// HWC. Decoding files is the platform's job (iOS: ImageIO / CGImage); the core starts here.
public struct Image {
    public let height: Int
    public let width: Int
    public let channels: Int
    public let values: [Float]

    private static let floatSlack: Float = 1e-3

    private init(_ height: Int, _ width: Int, _ channels: Int, _ values: [Float]) {
        self.height = height
        self.width = width
        self.channels = channels
        self.values = values
    }

    /// uint8 pixels 0..255 (Python: `astype(float32) / 255`).
    public static func fromBytes(height: Int, width: Int, channels: Int, pixels: [UInt8]) throws -> Image {
        try check(height, width, channels, pixels.count)
        return Image(height, width, channels, pixels.map { Float($0) / 255 })
    }

    /// Float pixels 0..1; values may overshoot by rounding (1e-3), never by scale.
    public static func fromFloats(height: Int, width: Int, channels: Int, values: [Float]) throws -> Image {
        try check(height, width, channels, values.count)
        let lo = values.min() ?? 0
        let hi = values.max() ?? 0
        if lo < -floatSlack || hi > 1 + floatSlack || !lo.isFinite || !hi.isFinite || values.contains(where: { $0.isNaN }) {
            throw DataError("float image has values in [\(Py.floatRepr(Double(lo))), \(Py.floatRepr(Double(hi)))]; expected 0..1. " +
                "Scale it first (uint8 images are divided by 255 automatically).")
        }
        return Image(height, width, channels, values.map { min(max($0, 0), 1) })
    }

    private static func check(_ h: Int, _ w: Int, _ c: Int, _ n: Int) throws {
        if h <= 0 || w <= 0 || (c != 1 && c != 3) || n != h * w * c {
            throw DataError("image has shape [\(h), \(w), \(c)] with \(n) values; expected [H, W] grey or [H, W, 3] RGB. " +
                "Convert RGBA or palette images to RGB first.")
        }
    }
}

/// Fixed-shape inputs of one step, row-major, batch first.
public struct Batch {
    public let pixelValues: [Float] // [B, 3, S, S]
    public let inputIds: [Int64] // [B, T]
    public let labels: [Int64] // [B, T]
    public let batchSize: Int
    public let imageSize: Int
    public let textLen: Int
    public var pixelShape: [Int] { [batchSize, 3, imageSize, imageSize] }
    public var textShape: [Int] { [batchSize, textLen] }
    public init(pixelValues: [Float], inputIds: [Int64], labels: [Int64], batchSize: Int, imageSize: Int, textLen: Int) {
        self.pixelValues = pixelValues
        self.inputIds = inputIds
        self.labels = labels
        self.batchSize = batchSize
        self.imageSize = imageSize
        self.textLen = textLen
    }
}

/// One encoded example: pixel_values `[3, S, S]`, input_ids and labels `[T]`.
public struct Encoded {
    public let pixels: [Float]
    public let inputIds: [Int64]
    public let labels: [Int64]
    public init(pixels: [Float], inputIds: [Int64], labels: [Int64]) {
        self.pixels = pixels
        self.inputIds = inputIds
        self.labels = labels
    }
}

/// mobile_peft/core/encode.py `Encoder` on the phone (named `InputEncoder` here: Swift's standard
/// library already has an `Encoder` protocol): image and text to the fixed-shape arrays of a bundle's
/// input spec, bit for bit (the golden fixtures in tests/demo_apps/fixtures prove it).
///
///     image  -> bilinear resize to [S, S] (align_corners=False, no antialias, float32 steps as
///               numpy's) -> grey to 3 channels -> (x - mean) / std        pixel_values [3, S, S]
///     text   input_ids: <bos> tok(prompt_template.format(question=q)) tok(answer) <eos> <pad>...
///            labels:    IGNORE ...                                    tok(answer) <eos> IGNORE ...
public final class InputEncoder {
    public let inputs: BundleInputSpec
    public let tokenizer: WordLevelTokenizer
    public var spec: InputSpec { inputs.spec }
    public var ids: TokenIds { inputs.tokenIds }
    public var batchSize: Int { inputs.batchSize }

    public init(_ inputs: BundleInputSpec, _ tokenizer: WordLevelTokenizer) {
        self.inputs = inputs
        self.tokenizer = tokenizer
    }

    public func image(_ image: Image) -> [Float] { InputEncoder.encodeImage(image, spec) }

    private func lower(_ text: String) -> String { spec.lowercase ? text.lowercased() : text }

    private func promptIds(_ question: String) throws -> [Int] {
        tokenizer.encode(try InputEncoder.formatPrompt(spec.promptTemplate, lower(question)))
    }

    /// `(input_ids, labels)`, both `[max_text_len]`; `source` (`"file:line"`) is named in the errors.
    public func text(_ question: String, _ answer: String, source: String = "") throws -> ([Int64], [Int64]) {
        let at = source.isEmpty ? "" : "\(source): "
        let prompt = try promptIds(question)
        let answerIds = tokenizer.encode(lower(answer))
        if answerIds.isEmpty {
            throw DataError("\(at)answer \(Py.repr(answer)) (question \(Py.repr(question))) encodes to no tokens; give a non-empty answer.")
        }
        let seq = [ids.bos] + prompt + answerIds + [ids.eos]
        let t = spec.maxTextLen
        if seq.count > t {
            throw DataError(
                "\(at)question \(Py.repr(question)) with answer \(Py.repr(answer)) needs \(seq.count) tokens " +
                    "(1 <bos> + \(prompt.count) prompt + \(answerIds.count) answer + 1 <eos>) but max_text_len=\(t); " +
                    "shorten the question, answer or prompt_template, or set InputSpec(max_text_len=\(seq.count)) or larger " +
                    "(a bundle's length is fixed at export).")
        }
        let inputIds = (0..<t).map { Int64($0 < seq.count ? seq[$0] : ids.pad) }
        let labels = (0..<t).map { Int64($0 > prompt.count && $0 < seq.count ? seq[$0] : ids.ignoreIndex) }
        return (inputIds, labels)
    }

    /// `(input_ids [max_text_len], length)` for inference: `<bos> prompt` then padding.
    public func prompt(_ question: String) throws -> ([Int64], Int) {
        let promptTokens = try promptIds(question)
        let seq = [ids.bos] + promptTokens
        if seq.count + 2 > spec.maxTextLen {
            throw DataError(
                "question \(Py.repr(question)) needs \(seq.count) prompt tokens, leaving no room for an answer in " +
                    "max_text_len=\(spec.maxTextLen); set InputSpec(max_text_len=\(seq.count + 2)) or larger.")
        }
        return ((0..<spec.maxTextLen).map { Int64($0 < seq.count ? seq[$0] : ids.pad) }, seq.count)
    }

    /// Text of generated answer ids, stopping at the first `<eos>`; pads and specials dropped.
    public func decodeAnswer(_ tokenIds: [Int]) -> String {
        let cut = tokenIds.firstIndex(of: ids.eos).map { Array(tokenIds[..<$0]) } ?? tokenIds
        return tokenizer.decode(cut.filter { $0 != ids.pad && $0 != ids.ignoreIndex }).trimmingCharacters(in: .whitespaces)
    }

    public func example(_ image: Image, _ question: String, _ answer: String) throws -> Encoded {
        let (x, y) = try text(question, answer)
        return Encoded(pixels: self.image(image), inputIds: x, labels: y)
    }

    /// Stack encoded examples into one batch (their number need not be `batchSize`).
    public func batch(_ rows: [Encoded]) -> Batch {
        Batch(pixelValues: rows.flatMap { $0.pixels }, inputIds: rows.flatMap { $0.inputIds }, labels: rows.flatMap { $0.labels },
              batchSize: rows.count, imageSize: spec.imageSize, textLen: spec.maxTextLen)
    }

    /// `template.format(question=q)` for templates whose only field is `{question}` (`{{` and
    /// `}}` are literal braces); any other field is refused as Python's `format` would refuse it.
    public static func formatPrompt(_ template: String, _ question: String) throws -> String {
        let s = Array(template.unicodeScalars)
        let field = Array(SpecDefaults.questionPlaceholder.unicodeScalars)
        var out = ""
        var i = 0
        func at(_ word: [Unicode.Scalar]) -> Bool { i + word.count <= s.count && Array(s[i..<(i + word.count)]) == word }
        while i < s.count {
            if at(["{", "{"]) {
                out += "{"
                i += 2
            } else if at(["}", "}"]) {
                out += "}"
                i += 2
            } else if at(field) {
                out += question
                i += field.count
            } else if s[i] == "{" || s[i] == "}" {
                throw ConfigError(
                    "prompt_template=\(Py.repr(template)) has a field other than \(SpecDefaults.questionPlaceholder) at position \(i); " +
                        "only \(SpecDefaults.questionPlaceholder) is filled in (write {{ and }} for literal braces).")
            } else {
                out.unicodeScalars.append(s[i])
                i += 1
            }
        }
        return out
    }

    /// `encode_image`: normalised float32 `[3, S, S]`, S = spec.imageSize.
    public static func encodeImage(_ image: Image, _ spec: InputSpec) -> [Float] {
        let c = image.channels, h = image.height, w = image.width
        var chw = [Float](repeating: 0, count: c * h * w) // [C, H, W]
        for y in 0..<h { for x in 0..<w { for ch in 0..<c { chw[ch * h * w + y * w + x] = image.values[(y * w + x) * c + ch] } } }
        let size = spec.imageSize
        let resized = h == size && w == size ? chw : bilinearResize(chw, c, h, w, size)
        let plane = size * size
        var out = [Float](repeating: 0, count: 3 * plane)
        for ch in 0..<3 {
            let mean = Float(spec.imageMean[ch])
            let std = Float(spec.imageStd[ch])
            let src = c == 1 ? 0 : ch // grey -> RGB
            for i in 0..<plane { out[ch * plane + i] = (resized[src * plane + i] - mean) / std }
        }
        return out
    }

    /// PyTorch's `area_pixel_compute_source_index` (align_corners=False), in float32 as its CPU kernel.
    private static func taps(_ outSize: Int, _ inSize: Int) -> (lo: [Int], hi: [Int], weight: [Float]) {
        let scale = Float(Double(inSize) / Double(outSize))
        var lo = [Int](repeating: 0, count: outSize)
        var hi = [Int](repeating: 0, count: outSize)
        var weight = [Float](repeating: 0, count: outSize)
        for i in 0..<outSize {
            let src = max((Float(i) + 0.5) * scale - 0.5, 0)
            lo[i] = min(Int(Double(src).rounded(.down)), inSize - 1)
            hi[i] = min(lo[i] + 1, inSize - 1)
            weight[i] = src - Float(lo[i])
        }
        return (lo, hi, weight)
    }

    /// `[C, H, W]` -> `[C, size, size]` as `F.interpolate(mode="bilinear", align_corners=False,
    /// antialias=False)` and mobile_peft/core/encode.py `bilinear_resize`: rows first, then columns,
    /// each product and sum rounded to float32 in that order.
    public static func bilinearResize(_ x: [Float], _ c: Int, _ h: Int, _ w: Int, _ size: Int) -> [Float] {
        let ty = taps(size, h)
        let tx = taps(size, w)
        var top = [Float](repeating: 0, count: c * size * w) // [C, size, W]
        for ch in 0..<c {
            for oy in 0..<size {
                let wy = ty.weight[oy]
                let a = ch * h * w + ty.lo[oy] * w
                let b = ch * h * w + ty.hi[oy] * w
                for xx in 0..<w {
                    let p: Float = x[a + xx] * (1 - wy)
                    let q: Float = x[b + xx] * wy
                    top[(ch * size + oy) * w + xx] = p + q
                }
            }
        }
        var out = [Float](repeating: 0, count: c * size * size)
        for ch in 0..<c {
            for oy in 0..<size {
                let row = (ch * size + oy) * w
                for ox in 0..<size {
                    let wx = tx.weight[ox]
                    let p: Float = top[row + tx.lo[ox]] * (1 - wx)
                    let q: Float = top[row + tx.hi[ox]] * wx
                    out[(ch * size + oy) * size + ox] = p + q
                }
            }
        }
        return out
    }
}
