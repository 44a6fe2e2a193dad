import Foundation

/// One annotation of a folder data set: the resolved image file, the question, the answer, its line.
public struct FolderExample: Equatable {
    public let image: URL
    public let question: String
    public let answer: String
    public let line: Int
    public let source: String
}

/// The SDK's data-folder format (mobile_peft/core/datasets.py):
///
///     my_data/annotations.jsonl   {"image": "cat.png", "question": "what animal is this ?", "answer": "cat"}
///     my_data/images/cat.png
///
/// `image` is relative to the folder or to its `images/` folder; extra keys are ignored. The files
/// are untrusted input, so every line is checked before anything is returned, with the SDK's
/// messages: UTF-8, JSON, the three keys as non-empty strings of at most `maxTextChars`
/// characters, an image path that stays inside the folder (no `..`, no absolute path, no link
/// out), an image the platform decodes (`checkImage`; `checkSize` gives the SDK's pixel limit).
/// Every problem is reported in one `DataError`, or with `skipBad` the bad lines are left out and
/// listed in `skipped`. The train/eval split is by image, a seeded permutation of the distinct
/// images drawn exactly as numpy draws it (`NumpyRandom`), so the phone splits as the SDK does.
public enum FolderDataset {
    public static let annotationsFile = "annotations.jsonl"
    public static let imagesDir = "images"
    public static let image = "image"
    public static let question = "question"
    public static let answer = "answer"
    public static let splitAll = "all"
    public static let splitTrain = "train"
    public static let splitEval = "eval"
    public static let maxImagePixels = 50_000_000 // a 48-megapixel phone photo fits; a decompression bomb does not
    public static let maxTextChars = 1000
    private static let required = [image, question, answer]
    private static let maxListed = 50
    private static let expectedLine = #"{"image": "images/x.png", "question": "...", "answer": "..."}"#

    /// The SDK's pixel limit, for a decoder that reads the size before decoding (as ImageIO can).
    public static func checkSize(_ file: URL, width: Int, height: Int) throws {
        if width * height > maxImagePixels {
            throw DataError("image \(Py.repr(file.path)) has \(width)x\(height) pixels, over the limit of \(Py.grouped(maxImagePixels)); resize it")
        }
    }

    /// Every (image, question, answer) of `folder`, or one `DataError` listing every bad line.
    public static func read(_ folder: URL, checkImage: ((URL) throws -> Void)? = nil, skipBad: Bool = false,
                            skipped: ((String) -> Void)? = nil) throws -> [FolderExample] {
        let annotations = folder.appendingPathComponent(annotationsFile)
        if !Checksums.isDirectory(folder) { throw DataError("data folder \(folder.path) does not exist; expected a folder with \(annotationsFile).") }
        if !Checksums.isFile(annotations) {
            throw DataError("\(folder.path) has no \(annotationsFile); add one with a line per example like \(expectedLine).")
        }
        var problems: [String] = []
        var out: [FolderExample] = []
        var images: [String: String?] = [:] // path -> why it cannot be read (nil: readable)
        for (number, line) in try lines(annotations) {
            var lineProblems: [String] = []
            var record: JSONObject?
            if let line { record = check(line, &lineProblems) } else { lineProblems.append("not UTF-8 text; save the file as UTF-8") }
            var path: URL?
            if let record {
                path = resolve(folder, record[image]!.string!, &lineProblems)
                if let path {
                    if images[path.path] == nil { images[path.path] = .some(readProblem(path, checkImage)) }
                    if let why = images[path.path]!, !why.isEmpty { lineProblems.append(why) }
                }
            }
            if let record, lineProblems.isEmpty {
                out.append(FolderExample(image: path!, question: record[question]!.string!, answer: record[answer]!.string!,
                                         line: number, source: "\(annotations.path):\(number)"))
            }
            problems += lineProblems.map { "line \(number): \($0)" }
        }
        if !problems.isEmpty && skipBad {
            for p in problems { skipped?("\(annotations.path):" + p.dropFirst("line ".count)) }
            problems = []
        }
        if !problems.isEmpty {
            let listed = problems.prefix(maxListed)
            let more = problems.count - listed.count
            throw DataError(
                "\(annotations.path) has \(problems.count) problem(s):\n  " + listed.joined(separator: "\n  ") +
                    (more > 0 ? "\n  ... and \(more) more" : "") +
                    "\nEach line must be a JSON object like \(expectedLine) with non-empty strings, the image " +
                    "relative to \(folder.path) or to its \(imagesDir)/ folder. Fix these lines and retry " +
                    "(or pass --skip-bad to leave them out).")
        }
        if out.isEmpty { throw DataError("\(annotations.path) has no usable examples; add one JSON line per example like \(expectedLine).") }
        return out
    }

    /// Why the image cannot be read, or nil.
    private static func readProblem(_ path: URL, _ checkImage: ((URL) throws -> Void)?) -> String? {
        do {
            try checkImage?(path)
            return nil
        } catch let e as DataErrorKind {
            return e.message
        } catch {
            return "cannot decode image \(Py.repr(path.path)) (\(errorMessage(error)))"
        }
    }

    /// (line number, text) of every non-blank line, split at `\n` only; text nil for a line that is not UTF-8.
    private static func lines(_ annotations: URL) throws -> [(Int, String?)] {
        var data: [UInt8]
        do { data = [UInt8](try Data(contentsOf: annotations)) } catch { throw DataError("cannot read \(annotations.path) (\(error.localizedDescription))") }
        if data.count >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF { data.removeFirst(3) }
        var out: [(Int, String?)] = []
        var start = 0
        var number = 1
        for i in 0...data.count {
            if i < data.count && data[i] != 0x0A { continue }
            let text = String(data: Data(data[start..<i]), encoding: .utf8)
            if let text {
                if !text.unicodeScalars.allSatisfy(isSpace) { out.append((number, text)) }
            } else {
                out.append((number, nil))
            }
            start = i + 1
            number += 1
        }
        return out
    }

    /// `load_folder`: all examples (`split = "all"`) or the `"train"` / `"eval"` side of the split,
    /// by image: `n_eval = min(max(1, round(images * evalFraction)), images - 1)` distinct images
    /// chosen by `default_rng(seed).permutation`, file order kept on each side.
    public static func load(_ folder: URL, split: String = splitAll, seed: Int = 0, evalFraction: Double = 0.2,
                            checkImage: ((URL) throws -> Void)? = nil, skipBad: Bool = false,
                            skipped: ((String) -> Void)? = nil) throws -> [FolderExample] {
        if ![splitAll, splitTrain, splitEval].contains(split) { throw DataError("split=\(Py.repr(split)); expected 'all', 'train' or 'eval'.") }
        if !(evalFraction > 0 && evalFraction < 1) {
            throw DataError("eval_fraction=\(Py.floatRepr(evalFraction)) must be strictly between 0 and 1, e.g. 0.2.")
        }
        let examples = try read(folder, checkImage: checkImage, skipBad: skipBad, skipped: skipped)
        if split == splitAll { return examples }
        var images: [String] = []
        for e in examples where !images.contains(e.image.path) { images.append(e.image.path) }
        if images.count < 2 {
            throw DataError("\(folder.path) has \(images.count) distinct image(s); a train/eval split needs at least 2. Add images, or load it with split='all'.")
        }
        let nEval = min(max(1, Int((Double(images.count) * evalFraction).rounded(.toNearestOrEven))), images.count - 1)
        let order = NumpyRandom.of(seed).permutation(images.count)
        let evalImages = Set((0..<nEval).map { images[order[$0]] })
        return examples.filter { evalImages.contains($0.image.path) == (split == splitEval) }
    }

    private static func check(_ line: String, _ problems: inout [String]) -> JSONObject? {
        let parsed: JSON
        do {
            parsed = try Json.parse(line)
        } catch let e as JsonError {
            problems.append(e.reason == Json.tooDeep ? "invalid JSON (nested too deeply)" : "invalid JSON (\(e.reason) at column \(e.column))")
            return nil
        } catch {
            problems.append("invalid JSON (\(errorMessage(error)))")
            return nil
        }
        guard let record = parsed.object else {
            problems.append("expected a JSON object, got \(Py.typeName(parsed))")
            return nil
        }
        let before = problems.count
        for key in required {
            let v = record[key]
            if !record.contains(key) {
                problems.append("missing key \(Py.repr(key))")
            } else if v?.string == nil {
                problems.append("\(Py.repr(key)) must be a string, got \(Py.typeName(v)) \(Py.repr(Py.head(v, 40)))")
            } else if v!.string!.unicodeScalars.allSatisfy(isSpace) {
                problems.append("\(Py.repr(key)) is empty")
            } else if v!.string!.unicodeScalars.count > maxTextChars {
                problems.append("\(Py.repr(key)) has \(Py.grouped(v!.string!.unicodeScalars.count)) characters, over the limit of \(Py.grouped(maxTextChars))")
            }
        }
        return problems.count == before ? record : nil
    }

    /// The image file inside `folder` (or its images/), as `_resolve_image`: `folder / name`, then
    /// `folder / images / name` (Python joins paths dropping `.` and empty parts); a path that leaves
    /// the folder, or a link that points out of it, is a problem.
    private static func resolve(_ folder: URL, _ name: String, _ problems: inout [String]) -> URL? {
        let parts = name.split(separator: "/").map(String.init).filter { $0 != "." }
        if name.hasPrefix("/") || parts.contains("..") || name.contains("\\") {
            problems.append("image path \(Py.repr(name)) leaves the data folder; give a path relative to \(folder.path)")
            return nil
        }
        let root = folder.resolvingSymlinksInPath().standardizedFileURL.pathComponents
        for base in [folder, folder.appendingPathComponent(imagesDir)] {
            let candidate = parts.reduce(base) { $0.appendingPathComponent($1) }
            if Checksums.isFile(candidate) {
                let real = candidate.resolvingSymlinksInPath().standardizedFileURL
                if !real.pathComponents.starts(with: root) {
                    problems.append("image \(Py.repr(name)) is a link to \(real.path), outside the data folder")
                    return nil
                }
                return candidate
            }
        }
        problems.append("image file \(Py.repr(name)) not found (looked in \(folder.path) and \(folder.appendingPathComponent(imagesDir).path))")
        return nil
    }

    /// Python's `str.isspace` for one character (White_Space, plus the separators U+001C..U+001F).
    public static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
}
