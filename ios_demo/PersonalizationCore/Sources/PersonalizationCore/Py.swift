import Foundation

/// The few Python behaviours the SDK's outputs depend on, so the phone's messages and files read
/// exactly like the SDK's: `repr()` of JSON values, `float.__repr__` (the shortest decimal that
/// reads back as the same double), the type names in messages, string order, `f"{n:,}"`.
public enum Py {
    /// Python's `type(v).__name__` for a JSON value (`nil`, an absent key, reads as `None`).
    public static func typeName(_ v: JSON?) -> String {
        switch v ?? .null {
        case .null: return "NoneType"
        case .bool: return "bool"
        case .string: return "str"
        case .int: return "int"
        case .double: return "float"
        case .array: return "list"
        case .object: return "dict"
        }
    }

    /// Python's `repr()` of a JSON value (`'a'`, `3`, `1.5`, `True`, `None`, `['a', 1]`, `{'k': 2}`).
    public static func repr(_ v: JSON?) -> String {
        switch v ?? .null {
        case .null: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .string(let s): return strRepr(s)
        case .int(let n): return String(n)
        case .double(let d): return floatRepr(d)
        case .array(let a): return "[" + a.map { repr($0) }.joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.pairs.map { strRepr($0.key) + ": " + repr($0.value) }.joined(separator: ", ") + "}"
        }
    }

    public static func repr(_ s: String) -> String { strRepr(s) }
    public static func repr(_ l: [String]) -> String { repr(JSON(l)) }
    public static func repr(_ l: [Int]) -> String { repr(JSON(l)) }

    /// Python's `a == b` for JSON scalars: `1 == 1.0 == True`.
    public static func equal(_ a: JSON?, _ b: JSON?) -> Bool {
        if let x = numeric(a), let y = numeric(b) { return x == y }
        return a == b
    }

    private static func numeric(_ v: JSON?) -> Double? {
        if case .bool(let b)? = v { return b ? 1 : 0 }
        return v?.number
    }

    /// What Python's `int(v)` / `float(v)` raise for a value (`TypeError`, `ValueError`).
    public struct CastError: Error { public let message: String }

    /// Python's `int(v)`: ints and bools as they are, floats truncated, numeric strings parsed.
    public static func toInt(_ v: JSON?) throws -> Int {
        switch v ?? .null {
        case .bool(let b): return b ? 1 : 0
        case .int(let n): return n
        case .double(let d):
            guard d.isFinite else { throw CastError(message: "cannot convert float \(floatRepr(d)) to integer") }
            guard let n = Int(exactly: d.rounded(.towardZero)) else { throw CastError(message: "\(floatRepr(d)) is beyond a 64-bit integer") }
            return n
        case .string(let s):
            guard let n = Int(s.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "_", with: "")) else {
                throw CastError(message: "invalid literal for int() with base 10: \(strRepr(s))")
            }
            return n
        default: throw CastError(message: "int() argument must be a string or a real number, not '\(typeName(v))'")
        }
    }

    /// Python's `float(v)`.
    public static func toFloat(_ v: JSON?) throws -> Double {
        switch v ?? .null {
        case .bool(let b): return b ? 1 : 0
        case .int(let n): return Double(n)
        case .double(let d): return d
        case .string(let s):
            switch s.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() {
            case "nan", "+nan", "-nan": return .nan
            case "inf", "+inf", "infinity", "+infinity": return .infinity
            case "-inf", "-infinity": return -.infinity
            case let t:
                guard let d = Double(t) else { throw CastError(message: "could not convert string to float: \(strRepr(s))") }
                return d
            }
        default: throw CastError(message: "float() argument must be a string or a real number, not '\(typeName(v))'")
        }
    }

    /// Python's truthiness of a JSON value (`x or default`).
    public static func truthy(_ v: JSON?) -> Bool {
        switch v ?? .null {
        case .null: return false
        case .bool(let b): return b
        case .int(let n): return n != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        }
    }

    /// Python's `str(v)`: a string as it is, anything else as its repr.
    public static func str(_ v: JSON?) -> String { v?.string ?? repr(v) }

    /// `str(v)[:n]`, counting code points.
    public static func head(_ v: JSON?, _ n: Int) -> String {
        let s = str(v)
        guard s.unicodeScalars.count > n else { return s }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: s.unicodeScalars.prefix(n))
        return String(out)
    }

    /// `f"{n:,}"`.
    public static func grouped(_ n: Int) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// Python's `str` ordering: by code point (Swift's `<` compares canonical equivalents, UTF-16 in
    /// Kotlin; both differ from Python).
    public static func compare(_ a: String, _ b: String) -> Int {
        var x = a.unicodeScalars.makeIterator()
        var y = b.unicodeScalars.makeIterator()
        while true {
            switch (x.next(), y.next()) {
            case (nil, nil): return 0
            case (nil, _): return -1
            case (_, nil): return 1
            case let (p?, q?): if p != q { return p.value < q.value ? -1 : 1 }
            }
        }
    }

    /// `sorted()` of strings, as Python sorts them.
    public static func sorted(_ strings: [String]) -> [String] { strings.sorted { compare($0, $1) < 0 } }

    private static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator: return false
        case .spaceSeparator: return c == " "
        default: return true
        }
    }

    private static func hex(_ v: UInt32, _ width: Int) -> String {
        let h = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - h.count)) + h
    }

    private static func strRepr(_ s: String) -> String {
        let quote: Unicode.Scalar = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(Character(quote))
        for c in s.unicodeScalars {
            let cp = c.value
            if c == quote || c == "\\" {
                out += "\\" + String(Character(c))
            } else if c == "\t" {
                out += "\\t"
            } else if c == "\n" {
                out += "\\n"
            } else if c == "\r" {
                out += "\\r"
            } else if cp < 0x7F && cp >= 0x20 {
                out.unicodeScalars.append(c)
            } else if cp < 0x80 || (cp <= 0xFF && !isPrintable(c)) {
                out += "\\x" + hex(cp, 2)
            } else if isPrintable(c) {
                out.unicodeScalars.append(c)
            } else if cp <= 0xFFFF {
                out += "\\u" + hex(cp, 4)
            } else {
                out += "\\U" + hex(cp, 8)
            }
        }
        return out + String(Character(quote))
    }

    /// `json.dumps` of a float: its repr, with `NaN` / `Infinity` / `-Infinity`.
    public static func jsonFloat(_ x: Double) -> String {
        if x.isNaN { return "NaN" }
        if x == .infinity { return "Infinity" }
        if x == -.infinity { return "-Infinity" }
        return floatRepr(x)
    }

    /// `float.__repr__`: the shortest digit string that reads back as `x` (of those, the closest
    /// to `x`), positional for exponents -4..16, else `d.ddde±XX`.
    public static func floatRepr(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x > 0 ? "inf" : "-inf" }
        if x == 0 { return x.sign == .minus ? "-0.0" : "0.0" }
        let (digits, decpt) = shortestDigits(abs(x))
        let sign = x < 0 ? "-" : ""
        let n = digits.count
        if decpt <= -4 || decpt > 16 {
            let exp = decpt - 1
            let mantissa = n == 1 ? digits : String(digits.prefix(1)) + "." + String(digits.dropFirst())
            let e = String(abs(exp))
            return sign + mantissa + "e" + (exp < 0 ? "-" : "+") + (e.count < 2 ? "0" + e : e)
        }
        if decpt <= 0 { return sign + "0." + String(repeating: "0", count: -decpt) + digits }
        if decpt >= n { return sign + digits + String(repeating: "0", count: decpt - n) + ".0" }
        return sign + String(digits.prefix(decpt)) + "." + String(digits.dropFirst(decpt))
    }

    /// `(digits, decpt)` with `x = 0.<digits> * 10^decpt`. Swift's `description` of a Double is
    /// already the shortest round-trip digits, closest to `x` (SwiftDtoa), as Python's repr;
    /// only its layout differs, so the digits and exponent are read back out of it.
    private static func shortestDigits(_ x: Double) -> (String, Int) {
        let text = x.description // "1.2345e-05", "123.0", "5e-324"
        let parts = text.split(separator: "e", maxSplits: 1)
        let mantissa = String(parts[0])
        let exp10 = parts.count > 1 ? Int(parts[1])! : 0
        let dot = mantissa.firstIndex(of: ".")
        let intPart = dot.map { String(mantissa[..<$0]) } ?? mantissa
        let fracPart = dot.map { String(mantissa[mantissa.index(after: $0)...]) } ?? ""
        var all = intPart + fracPart
        var decpt = intPart.count + exp10
        while all.hasPrefix("0") && all.count > 1 { all.removeFirst(); decpt -= 1 }
        while all.hasSuffix("0") && all.count > 1 { all.removeLast() }
        return (all, decpt)
    }

    /// Python's `round(x, digits)` of a double: correctly rounded to `digits` decimals (C's `%.*f`
    /// is correctly rounded on Darwin and glibc, as Python's own dtoa), then read back.
    public static func round(_ x: Double, _ digits: Int) -> Double {
        guard x.isFinite else { return x }
        return Double(String(format: "%.\(digits)f", x))!
    }
}
