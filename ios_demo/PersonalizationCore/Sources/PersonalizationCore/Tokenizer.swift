import Foundation

/// A Hugging Face `tokenizer.json` with a `WordLevel` model, applied as the `tokenizers` library
/// applies the SDK's word tokenizer (mobile_peft/data/tokenizer.py) with
/// `encode(text, add_special_tokens=False)`:
///
///  1. added tokens (`added_tokens`, matched verbatim, leftmost-longest) are split out first;
///  2. the normalizer: `Lowercase` (each character's full lower-case mapping, as Rust's
///     `char::to_lowercase`), or none;
///  3. the pre-tokenizers, in order: `Whitespace` (pieces `\w+` or `[^\w\s]+`, Unicode classes as
///     Rust's regex crate) and `Punctuation` with behaviour `Isolated` (every ASCII punctuation
///     character and every character of Unicode category P* becomes its own piece);
///  4. each piece's vocabulary id, unknown pieces the `unk_token`'s.
///
/// Any other model, normalizer, pre-tokenizer, post-processor or added-token option is refused
/// with an `UnsupportedTokenizerError` rather than approximated. Text is handled as Unicode scalars
/// (code points, as Rust's `char`); character classes come from the OS's Unicode tables.
public final class WordLevelTokenizer {
    public static let wordLevel = "WordLevel"
    public static let lowercaseName = "Lowercase"
    public static let whitespaceName = "Whitespace"
    public static let punctuationName = "Punctuation"
    public static let sequenceName = "Sequence"
    private static let isolated = "Isolated"
    private static let typeKey = "type"
    private static let asciiPunctuation = Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".unicodeScalars)

    private let vocab: [String: Int]
    private let unkId: Int
    private let lowercase: Bool
    private let steps: [String]
    private let added: [(String, Int)]
    private let special: Set<Int>
    private let byId: [Int: String]

    private init(vocab: [String: Int], unkId: Int, lowercase: Bool, steps: [String], added: [(String, Int)], special: Set<Int>) {
        self.vocab = vocab
        self.unkId = unkId
        self.lowercase = lowercase
        self.steps = steps
        self.added = added
        self.special = special
        var byId: [Int: String] = [:]
        for (k, v) in vocab { byId[v] = k }
        for (t, id) in added { byId[id] = t }
        self.byId = byId
    }

    /// `token_to_id`: the id of `token` (added tokens first), or nil.
    public func tokenToId(_ token: String) -> Int? { added.first { $0.0 == token }?.1 ?? vocab[token] }

    /// `encode(text, add_special_tokens=False).ids`.
    public func encode(_ text: String) -> [Int] { pieces(text).map { $0.1 ?? vocab[$0.0] ?? unkId } }

    /// The pieces of `text` after step 3 (an added token's id where one matched), for tests.
    public func pieces(_ text: String) -> [(String, Int?)] {
        var out: [(String, Int?)] = []
        for (segment, id) in splitAdded(text) {
            if let id {
                out.append((segment, id))
                continue
            }
            var pieces = [lowercase ? WordLevelTokenizer.lower(segment) : segment]
            for step in steps {
                pieces = pieces.flatMap(step == WordLevelTokenizer.whitespaceName ? WordLevelTokenizer.whitespace : WordLevelTokenizer.isolatePunctuation)
            }
            out += pieces.map { ($0, nil) }
        }
        return out
    }

    /// `decode(ids)` (special tokens skipped; no decoder: tokens joined with one space).
    public func decode(_ ids: [Int]) -> String { ids.filter { !special.contains($0) }.compactMap { byId[$0] }.joined(separator: " ") }

    private func splitAdded(_ text: String) -> [(String, Int?)] {
        if added.isEmpty { return [(text, nil)] }
        let s = Array(text.unicodeScalars)
        let tokens = added.map { (Array($0.0.unicodeScalars), $0.1) }
        var parts: [(String, Int?)] = []
        var i = 0
        var start = 0
        func string(_ from: Int, _ to: Int) -> String { var v = String.UnicodeScalarView(); v.append(contentsOf: s[from..<to]); return String(v) }
        while i < s.count {
            // longest first (sorted at load)
            guard let hit = tokens.first(where: { !$0.0.isEmpty && i + $0.0.count <= s.count && Array(s[i..<(i + $0.0.count)]) == $0.0 }) else {
                i += 1
                continue
            }
            if i > start { parts.append((string(start, i), nil)) }
            parts.append((string(i, i + hit.0.count), hit.1))
            i += hit.0.count
            start = i
        }
        if start < s.count { parts.append((string(start, s.count), nil)) }
        return parts
    }

    public static func load(_ url: URL) throws -> WordLevelTokenizer { try fromJson(try Json.parseFile(url), source: url.lastPathComponent) }

    public static func fromJson(_ root: JSON, source: String) throws -> WordLevelTokenizer {
        func refuse(_ what: String) -> UnsupportedTokenizerError {
            UnsupportedTokenizerError(
                "\(source): \(what); this app implements the WordLevel model with the Lowercase normalizer and the " +
                    "Whitespace + Punctuation pre-tokenizers (the SDK's word tokenizer). Export with that tokenizer, " +
                    "or add the tokenizer type to PersonalizationCore.WordLevelTokenizer.")
        }
        guard let r = root.object else { throw DataError("\(source) holds a \(Py.typeName(root)), not a tokenizer object") }
        guard let model = r["model"]?.object else { throw refuse("it has no model object") }
        if model[typeKey] != .string(wordLevel) { throw refuse("its model type is \(Py.repr(model[typeKey]))") }
        guard let vocabJson = model["vocab"]?.object else { throw refuse("its WordLevel model has no vocab object") }
        var vocab: [String: Int] = [:]
        for (k, v) in vocabJson {
            guard let id = v.int else { throw refuse("vocab entry \(Py.repr(k)) has id \(Py.repr(v))") }
            vocab[k] = id
        }
        guard let unk = model["unk_token"]?.string else { throw refuse("its WordLevel model has no unk_token") }
        guard let unkId = vocab[unk] else { throw DataError("\(source): unk_token \(Py.repr(unk)) is not in the vocabulary.") }

        let normalizers = try types(r["normalizer"], "normalizers", refuse)
        if let bad = normalizers.first(where: { $0[typeKey] != .string(lowercaseName) }) {
            throw refuse("its normalizer \(Py.repr(bad[typeKey])) is not supported")
        }
        let pre = try types(r["pre_tokenizer"], "pretokenizers", refuse)
        for p in pre {
            switch p[typeKey]?.string {
            case whitespaceName?: break
            case punctuationName?:
                if (p["behavior"] ?? .string(isolated)) != .string(isolated) { throw refuse("its Punctuation behavior is \(Py.repr(p["behavior"]))") }
            default: throw refuse("its pre-tokenizer \(Py.repr(p[typeKey])) is not supported")
            }
        }
        if let post = r["post_processor"], !post.isNull { throw refuse("it has a post_processor (\(Py.repr(post[typeKey])))") }

        var added: [(String, Int)] = []
        var special = Set<Int>()
        for t in r["added_tokens"]?.array ?? [] {
            guard let o = t.object else { throw refuse("an added token is not an object") }
            guard let content = o["content"]?.string else { throw refuse("an added token has no content") }
            guard let id = o["id"]?.int else { throw refuse("added token \(Py.repr(content)) has no id") }
            for flag in ["single_word", "lstrip", "rstrip", "normalized"] where o[flag] == .bool(true) {
                throw refuse("added token \(Py.repr(content)) sets \(flag)")
            }
            added.append((content, id))
            if o["special"] == .bool(true) { special.insert(id) }
        }
        // Longest first; a stable sort keeps file order among equal lengths (as Kotlin's sortByDescending).
        added = added.enumerated().sorted { a, b in
            let la = a.element.0.unicodeScalars.count, lb = b.element.0.unicodeScalars.count
            return la != lb ? la > lb : a.offset < b.offset
        }.map { $0.element }
        return WordLevelTokenizer(vocab: vocab, unkId: unkId, lowercase: !normalizers.isEmpty,
                                  steps: pre.map { $0[typeKey]!.string! }, added: added, special: special)
    }

    /// The steps of a normalizer / pre-tokenizer node: itself, or the members of a Sequence.
    private static func types(_ node: JSON?, _ members: String, _ refuse: (String) -> UnsupportedTokenizerError) throws -> [JSONObject] {
        guard let node, !node.isNull else { return [] }
        guard let o = node.object else { throw refuse("a normalizer or pre-tokenizer is a \(Py.typeName(node))") }
        if o[typeKey] == .string(sequenceName) {
            guard let list = o[members]?.array else { throw refuse("a Sequence has no \(members)") }
            return try list.flatMap { try types($0, members, refuse) }
        }
        return [o]
    }

    /// Rust `char::to_lowercase` on each character (no context rules, unlike `String.lowercased()`).
    public static func lower(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars { out += c.properties.lowercaseMapping }
        return out
    }

    private static func isWord(_ c: Unicode.Scalar) -> Bool {
        if c.properties.isAlphabetic || c.value == 0x200C || c.value == 0x200D { return true }
        switch c.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .spacingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// The Unicode White_Space property.
    private static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    private static func isPunctuation(_ c: Unicode.Scalar) -> Bool {
        if c.value < 128 { return asciiPunctuation.contains(c) }
        switch c.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// `\w+|[^\w\s]+`, leftmost first; whitespace is dropped.
    private static func whitespace(_ s: String) -> [String] {
        var out: [String] = []
        var run = String.UnicodeScalarView()
        var runIsWord = false
        for c in s.unicodeScalars {
            if isSpace(c) {
                if !run.isEmpty { out.append(String(run)); run = String.UnicodeScalarView() }
                continue
            }
            let word = isWord(c)
            if !run.isEmpty && word != runIsWord { out.append(String(run)); run = String.UnicodeScalarView() }
            runIsWord = word
            run.append(c)
        }
        if !run.isEmpty { out.append(String(run)) }
        return out
    }

    private static func isolatePunctuation(_ piece: String) -> [String] {
        var out: [String] = []
        var run = String.UnicodeScalarView()
        for c in piece.unicodeScalars {
            if isPunctuation(c) {
                if !run.isEmpty { out.append(String(run)); run = String.UnicodeScalarView() }
                out.append(String(Character(c)))
            } else {
                run.append(c)
            }
        }
        if !run.isEmpty { out.append(String(run)) }
        return out
    }
}
