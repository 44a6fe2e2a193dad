import Foundation
import XCTest
@testable import PersonalizationCore

/// The golden fixtures written by tests/demo_apps/make_fixtures.py from the SDK's own code (the
/// same files the Kotlin core's JUnit tests read). Found through `MOBILEPEFT_FIXTURES`, else at
/// `tests/demo_apps/fixtures` of the repository this file lies in.
enum Fixtures {
    static let dir: URL = {
        if let env = ProcessInfo.processInfo.environment["MOBILEPEFT_FIXTURES"] { return URL(fileURLWithPath: env) }
        var repo = URL(fileURLWithPath: #filePath)
        for _ in 0..<5 { repo.deleteLastPathComponent() } // Fixtures.swift, PersonalizationCoreTests, Tests, PersonalizationCore, ios_demo
        return repo.appendingPathComponent("tests/demo_apps/fixtures")
    }()

    static func file(_ name: String) -> URL { dir.appendingPathComponent(name) }

    static func json(_ name: String) throws -> JSONObject {
        guard let o = try Json.parseFile(file(name)).object else { throw DataError("\(name) is not a JSON object") }
        return o
    }

    static func tempDir(_ prefix: String) throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    static func copyTree(_ from: URL, _ to: URL) throws -> URL {
        try? FileManager.default.removeItem(at: to)
        try FileManager.default.createDirectory(at: to.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: from, to: to)
        return to
    }
}

// -- reading JSON values ----------------------------------------------------------------------------
extension JSON {
    var list: [JSON] { array! }
    var obj: JSONObject { object! }
    var str: String { string! }
    var i: Int { int! }
    var d: Double { number! }
    var floats: [Float] { array!.map { Float($0.number!) } }
    var doubles: [Double] { array!.map { $0.number! } }
    var ints: [Int] { array!.map { $0.int! } }
    var strings: [String] { array!.map { $0.string! } }
    var intMap: [String: Int] { var o: [String: Int] = [:]; for (k, v) in object! { o[k] = v.int! }; return o }
    var orderedIntMap: OrderedDict<Int> { OrderedDict(object!.pairs.map { ($0.key, $0.value.int!) }) }
    var doubleMap: [String: Double] { var o: [String: Double] = [:]; for (k, v) in object! { o[k] = v.number! }; return o }
}

/// `expected` and `actual` agree to 1e-6 (relative above 1).
func assertClose(_ expected: Double, _ actual: Double, _ what: String, tol: Double = 1e-6, file: StaticString = #filePath, line: UInt = #line) {
    let ok = (expected.isNaN && actual.isNaN) || abs(expected - actual) <= tol * max(1, abs(expected))
    XCTAssertTrue(ok, "\(what): expected \(expected), got \(actual)", file: file, line: line)
}

func assertClose(_ expected: [Float], _ actual: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(expected.count, actual.count, "\(what): length", file: file, line: line)
    for i in 0..<min(expected.count, actual.count) { assertClose(Double(expected[i]), Double(actual[i]), "\(what)[\(i)]", file: file, line: line) }
}

func assertBitIdentical(_ expected: [Float], _ actual: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(expected.count, actual.count, "\(what): length", file: file, line: line)
    let differ = zip(expected, actual).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }.map { $0.offset }
    XCTAssertTrue(differ.isEmpty, "\(what): \(differ.count) of \(expected.count) values differ in their bits, first at \(differ.first ?? -1)", file: file, line: line)
}

/// Apply make_fixtures.py's edits: `{"op": "set" | "delete", "path": [keys and indices], "value": ...}`.
func applyOps(_ doc: JSON, _ ops: [JSON]) -> JSON {
    var root = doc
    for op in ops {
        let o = op.obj
        let path = o["path"]!.list
        if path.isEmpty {
            root = o["value"]!
            continue
        }
        root = edit(root, path[...], o["op"] == .string("delete"), o["value"])
    }
    return root
}

private func edit(_ node: JSON, _ path: ArraySlice<JSON>, _ delete: Bool, _ value: JSON?) -> JSON {
    let key = path.first!
    let rest = path.dropFirst()
    switch (node, key) {
    case (.array(var a), .int(let i)):
        if rest.isEmpty { if delete { a.remove(at: i) } else { a[i] = value! } } else { a[i] = edit(a[i], rest, delete, value) }
        return .array(a)
    case (.object(var o), .string(let k)):
        if rest.isEmpty { o[k] = delete ? nil : value! } else { o[k] = edit(o[k]!, rest, delete, value) }
        return .object(o)
    default:
        XCTFail("cannot apply the edit at \(key) to \(Py.typeName(node))")
        return node
    }
}
