import Foundation

/// A JSON value as Python's `json` module reads it: a number without fraction or exponent is an
/// `int`, any other a `double`; objects keep insertion order (a repeated key keeps its first
/// position and its last value, as Python's dict).
public indirect enum JSON: Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSON])
    case object(JSONObject)

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var int: Int? { if case .int(let i) = self { return i } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var array: [JSON]? { if case .array(let a) = self { return a } else { return nil } }
    public var object: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }
    /// An int or a double as a double (Kotlin: `as Number`); bools are not numbers here.
    public var number: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public subscript(key: String) -> JSON? { object?[key] }
    public subscript(index: Int) -> JSON? {
        guard let a = array, index >= 0, index < a.count else { return nil }
        return a[index]
    }

    public init(_ strings: [String]) { self = .array(strings.map { .string($0) }) }
    public init(_ ints: [Int]) { self = .array(ints.map { .int($0) }) }
    public init(_ floats: [Float]) { self = .array(floats.map { .double(Double($0)) }) }
    public init(_ doubles: [Double]) { self = .array(doubles.map { .double($0) }) }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(JSONObject(elements)) }
}

/// An insertion-ordered JSON object (Kotlin: `LinkedHashMap<String, Any?>`).
public struct JSONObject: Equatable, Sequence {
    public private(set) var keys: [String] = []
    private var values: [String: JSON] = [:]

    public init() {}
    public init(_ pairs: [(String, JSON)]) { for (k, v) in pairs { self[k] = v } }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }
    public func contains(_ key: String) -> Bool { values[key] != nil }

    /// The value of `key`, `nil` when absent (a JSON `null` is `.null`); assigning `nil` removes.
    public subscript(key: String) -> JSON? {
        get { values[key] }
        set {
            if let v = newValue {
                if values[key] == nil { keys.append(key) }
                values[key] = v
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var pairs: [(key: String, value: JSON)] { keys.map { ($0, values[$0]!) } }
    public func makeIterator() -> IndexingIterator<[(key: String, value: JSON)]> { pairs.makeIterator() }

    public static func == (a: JSONObject, b: JSONObject) -> Bool { a.values == b.values }
}

/// A JSON text that Python's `json.loads` would also refuse; `reason`, `line`, `column` and
/// `position` (code points, as Python counts) are Python's.
public struct JsonError: DataErrorKind {
    public let reason: String
    public let line: Int
    public let column: Int
    public let position: Int
    public var message: String { "\(reason): line \(line) column \(column) (char \(position))" }
}

/// JSON as Python's `json` module reads and writes it, so the phone parses a manifest, a
/// tokenizer.json or an annotations line exactly as the SDK does, and writes files byte for byte
/// as the SDK does. Reading is strict RFC 8259 plus `NaN`, `Infinity` and `-Infinity` (the SDK's
/// `json.dumps` writes them). Not mirrored: integers beyond 64 bits (an error here) and lone
/// surrogate escapes (`\ud800` alone), which a Swift string cannot hold (read as U+FFFD).
public enum Json {
    /// The `JsonError.reason` of a document nested deeper than `maxDepth` (Python: a RecursionError).
    public static let tooDeep = "nested too deeply"
    public static let maxDepth = 900

    public static func parse(_ text: String) throws -> JSON { try Parser(text).document() }

    public static func parseFile(_ url: URL) throws -> JSON {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw DataError("cannot read \(url.path) (\(error.localizedDescription))") }
        guard let text = String(data: data, encoding: .utf8) else { throw DataError("\(url.path) is not UTF-8 text") }
        return try parse(text)
    }

    /// Python's `json.dumps(value, indent=indent, separators=..., sort_keys=sortKeys)` with
    /// `ensure_ascii=True`: `itemSeparator` defaults to ", " (or "," when `indent` is set).
    public static func dumps(_ value: JSON, indent: Int? = nil, itemSeparator: String? = nil,
                             keySeparator: String = ": ", sortKeys: Bool = false) -> String {
        var w = Writer(indent: indent, itemSeparator: itemSeparator ?? (indent == nil ? ", " : ","),
                       keySeparator: keySeparator, sortKeys: sortKeys)
        w.write(value, 0)
        return w.out
    }

    private static func isWhitespace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" }
    private static func isDigit(_ c: Unicode.Scalar) -> Bool { c.value >= 0x30 && c.value <= 0x39 }

    private struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        var depth = 0

        init(_ text: String) { s = Array(text.unicodeScalars) }

        mutating func document() throws -> JSON {
            skipWhitespace()
            let v = try value()
            skipWhitespace()
            if i != s.count { throw fail("Extra data", i) }
            return v
        }

        func fail(_ reason: String, _ at: Int) -> JsonError {
            let before = s[0..<at]
            let line = before.filter { $0 == "\n" }.count + 1
            let lastNewline = before.lastIndex(of: "\n") ?? -1
            return JsonError(reason: reason, line: line, column: at - lastNewline, position: at)
        }

        mutating func skipWhitespace() { while i < s.count && Json.isWhitespace(s[i]) { i += 1 } }

        func startsWith(_ word: String, _ at: Int) -> Bool {
            let w = Array(word.unicodeScalars)
            return at + w.count <= s.count && Array(s[at..<(at + w.count)]) == w
        }

        mutating func literal(_ word: String, _ v: JSON) throws -> JSON {
            if !startsWith(word, i) { throw fail("Expecting value", i) }
            i += word.unicodeScalars.count
            return v
        }

        mutating func value() throws -> JSON {
            if i >= s.count { throw fail("Expecting value", i) }
            switch s[i] {
            case "\"": return .string(try string())
            case "{": return try obj()
            case "[": return try array()
            case "n": return try literal("null", .null)
            case "t": return try literal("true", .bool(true))
            case "f": return try literal("false", .bool(false))
            case "N": return try literal("NaN", .double(.nan))
            case "I": return try literal("Infinity", .double(.infinity))
            case "-":
                if startsWith("-Infinity", i) { return try literal("-Infinity", .double(-.infinity)) }
                return try number()
            default: return try number()
            }
        }

        @discardableResult
        mutating func digits() -> Int {
            let start = i
            while i < s.count && Json.isDigit(s[i]) { i += 1 }
            return i - start
        }

        mutating func number() throws -> JSON {
            let start = i
            if s[i] == "-" { i += 1 }
            if i < s.count && Json.isDigit(s[i]) && s[i] != "0" {
                digits()
            } else if i < s.count && s[i] == "0" {
                i += 1
            } else {
                throw fail("Expecting value", start)
            }
            var isFloat = false
            if i + 1 < s.count && s[i] == "." && Json.isDigit(s[i + 1]) {
                i += 1
                digits()
                isFloat = true
            }
            if i < s.count && (s[i] == "e" || s[i] == "E") {
                let mark = i
                i += 1
                if i < s.count && (s[i] == "+" || s[i] == "-") { i += 1 }
                if digits() > 0 { isFloat = true } else { i = mark }
            }
            var text = ""
            text.unicodeScalars.append(contentsOf: s[start..<i])
            if isFloat { return .double(Double(text)!) }
            guard let n = Int(text) else { throw fail("Integer too large for this reader (64-bit)", start) }
            return .int(n)
        }

        mutating func string() throws -> String {
            let begin = i
            i += 1
            var out = String.UnicodeScalarView()
            while true {
                if i >= s.count { throw fail("Unterminated string starting at", begin) }
                let c = s[i]
                if c == "\"" {
                    i += 1
                    return String(out)
                } else if c == "\\" {
                    try escape(&out, begin)
                } else if c.value < 0x20 {
                    throw fail("Invalid control character at", i)
                } else {
                    out.append(c)
                    i += 1
                }
            }
        }

        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= s.count else { return nil }
            var text = ""
            text.unicodeScalars.append(contentsOf: s[at..<(at + 4)])
            guard text.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit }) else { return nil }
            return UInt32(text, radix: 16)
        }

        mutating func escape(_ out: inout String.UnicodeScalarView, _ begin: Int) throws {
            if i + 1 >= s.count { throw fail("Unterminated string starting at", begin) }
            let e = s[i + 1]
            switch e {
            case "\"", "\\", "/": out.append(e)
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "u":
                guard let code = hex4(i + 2) else { throw fail("Invalid \\uXXXX escape", i + 1) }
                i += 6
                // A high surrogate followed by an escaped low one is one character (as Python).
                if (0xD800...0xDBFF).contains(code) && startsWith("\\u", i), let low = hex4(i + 2), (0xDC00...0xDFFF).contains(low) {
                    out.append(Unicode.Scalar(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))!)
                    i += 6
                    return
                }
                out.append(Unicode.Scalar(code) ?? "\u{FFFD}")
                return
            default:
                throw fail("Invalid \\escape", i)
            }
            i += 2
        }

        mutating func nest() throws {
            depth += 1
            if depth > Json.maxDepth { throw fail(Json.tooDeep, i) }
        }

        mutating func obj() throws -> JSON {
            var out = JSONObject()
            try nest()
            i += 1
            skipWhitespace()
            if i < s.count && s[i] == "}" { i += 1; depth -= 1; return .object(out) }
            while true {
                if i >= s.count || s[i] != "\"" { throw fail("Expecting property name enclosed in double quotes", i) }
                let key = try string()
                skipWhitespace()
                if i >= s.count || s[i] != ":" { throw fail("Expecting ':' delimiter", i) }
                i += 1
                skipWhitespace()
                out[key] = try value()
                skipWhitespace()
                if i < s.count && s[i] == "}" { i += 1; depth -= 1; return .object(out) }
                if i >= s.count || s[i] != "," { throw fail("Expecting ',' delimiter", i) }
                i += 1
                skipWhitespace()
            }
        }

        mutating func array() throws -> JSON {
            var out: [JSON] = []
            try nest()
            i += 1
            skipWhitespace()
            if i < s.count && s[i] == "]" { i += 1; depth -= 1; return .array(out) }
            while true {
                out.append(try value())
                skipWhitespace()
                if i < s.count && s[i] == "]" { i += 1; depth -= 1; return .array(out) }
                if i >= s.count || s[i] != "," { throw fail("Expecting ',' delimiter", i) }
                i += 1
                skipWhitespace()
            }
        }
    }

    private struct Writer {
        let indent: Int?
        let itemSeparator: String
        let keySeparator: String
        let sortKeys: Bool
        var out = ""

        init(indent: Int?, itemSeparator: String, keySeparator: String, sortKeys: Bool) {
            self.indent = indent
            self.itemSeparator = itemSeparator
            self.keySeparator = keySeparator
            self.sortKeys = sortKeys
        }

        mutating func newline(_ level: Int) {
            if let indent { out += "\n" + String(repeating: " ", count: indent * level) }
        }

        mutating func write(_ value: JSON, _ level: Int) {
            switch value {
            case .null: out += "null"
            case .bool(let b): out += b ? "true" : "false"
            case .string(let s): string(s)
            case .int(let n): out += String(n)
            case .double(let d): out += Py.jsonFloat(d)
            case .object(let o):
                let pairs = sortKeys ? o.pairs.sorted { Py.compare($0.key, $1.key) < 0 } : o.pairs
                out += "{"
                if pairs.isEmpty { out += "}"; return }
                for (n, p) in pairs.enumerated() {
                    if n > 0 { out += itemSeparator }
                    newline(level + 1)
                    string(p.key)
                    out += keySeparator
                    write(p.value, level + 1)
                }
                newline(level)
                out += "}"
            case .array(let a):
                out += "["
                if a.isEmpty { out += "]"; return }
                for (n, v) in a.enumerated() {
                    if n > 0 { out += itemSeparator }
                    newline(level + 1)
                    write(v, level + 1)
                }
                newline(level)
                out += "]"
            }
        }

        // ensure_ascii=True: everything outside ' '..'~' is escaped; astral characters as a pair.
        mutating func string(_ s: String) {
            out += "\""
            for unit in s.utf16 {
                switch unit {
                case 0x22: out += "\\\""
                case 0x5C: out += "\\\\"
                case 0x0A: out += "\\n"
                case 0x0D: out += "\\r"
                case 0x09: out += "\\t"
                case 0x08: out += "\\b"
                case 0x0C: out += "\\f"
                case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(unit)!)
                default:
                    let hex = String(unit, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            }
            out += "\""
        }
    }
}
