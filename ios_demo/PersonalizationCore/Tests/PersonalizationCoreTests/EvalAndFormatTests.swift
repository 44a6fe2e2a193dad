import Foundation
import XCTest
@testable import PersonalizationCore

/// Exact-match accuracy against fixtures/eval.json (runtime.evaluate.correct_answers), and the Python
/// behaviours messages and files depend on (fixtures/pyformat.json, written by Python).
final class EvalAndFormatTests: XCTestCase {
    func testCorrectAnswersAreTheRuntimes() throws {
        let fx = try Fixtures.json("eval.json")
        let shape = fx["shape"]!.ints
        let got = try Evaluate.correctAnswers(fx["logits"]!.floats, fx["labels"]!.ints.map(Int64.init), batch: shape[0], textLen: shape[1])
        XCTAssertEqual(fx["correct"]!.list.map { $0.bool! }, got)
    }

    func testFloatReprIsPythons() throws {
        for c in try Fixtures.json("pyformat.json")["floats"]!.list { XCTAssertEqual(c["repr"]!.str, Py.floatRepr(c["value"]!.d), "repr of \(c["value"]!.d)") }
    }

    func testStringReprIsPythons() throws {
        for c in try Fixtures.json("pyformat.json")["strings"]!.list { XCTAssertEqual(c["repr"]!.str, Py.repr(c["value"])) }
    }

    func testThousandsSeparators() throws {
        for c in try Fixtures.json("pyformat.json")["grouped"]!.list { XCTAssertEqual(c["text"]!.str, Py.grouped(c["value"]!.i)) }
    }

    func testDumpsIsPythons() throws {
        let d = try Fixtures.json("pyformat.json")["dumps"]!.obj
        let value = d["value"]!
        XCTAssertEqual(d["default"]!.str, Json.dumps(value))
        XCTAssertEqual(d["indent_sorted"]!.str, Json.dumps(value, indent: 2, sortKeys: true))
        XCTAssertEqual(d["compact"]!.str, Json.dumps(value, itemSeparator: ",", keySeparator: ":"))
    }

    func testParseErrorsAreAtPythonsPositions() throws {
        for case let .object(c) in try Fixtures.json("pyformat.json")["bad_json"]!.list {
            let text = c["text"]!.str
            do {
                _ = try Json.parse(text)
                XCTAssertTrue(c["error"] == nil || c["error"] == .null, "Python refuses \(Py.repr(text))")
            } catch let e as JsonError {
                XCTAssertEqual(c["error"]?.string, e.reason, "error of \(Py.repr(text))")
                XCTAssertEqual(c["line"]!.i, e.line, "line of \(Py.repr(text))")
                XCTAssertEqual(c["column"]!.i, e.column, "column of \(Py.repr(text))")
                XCTAssertEqual(c["position"]!.i, e.position, "position of \(Py.repr(text))")
            }
        }
    }

    func testAcceptsWhatPythonAccepts() throws {
        for case let .object(c) in try Fixtures.json("pyformat.json")["good_json"]!.list {
            XCTAssertEqual(c["dumps"]!.str, Json.dumps(try Json.parse(c["text"]!.str)), Py.repr(c["text"]))
        }
    }

    func testStringOrderIsByCodePoint() {
        // U+FF5E sorts after U+1F642 by UTF-16 unit but before it by code point (Python's order).
        XCTAssertEqual(["\u{FF5E}", "\u{1F642}"], Py.sorted(["\u{1F642}", "\u{FF5E}"]))
    }
}
