import Foundation
import XCTest
@testable import PersonalizationCore

/// The data-folder reader, its split and the batch order against fixtures/data.json.
final class DataFixtureTests: XCTestCase {
    var fx = JSONObject()
    let folder = Fixtures.file("data")

    override func setUpWithError() throws { fx = try Fixtures.json("data.json") }

    private func rows(_ examples: [FolderExample]) -> JSON { .array(examples.map { JSON([$0.question, $0.answer]) }) }

    func testEveryExampleInFileOrder() throws {
        XCTAssertEqual(fx["all"]!, rows(try FolderDataset.load(folder)))
    }

    func testTheSplitIsTheSdks() throws {
        for case let .object(c) in fx["splits"]!.list {
            let got = try FolderDataset.load(folder, split: c["split"]!.str, seed: c["seed"]!.i, evalFraction: c["eval_fraction"]!.d)
            XCTAssertEqual(c["examples"]!, rows(got), "split \(Json.dumps(.object(c)))")
        }
    }

    func testEveryBadLineIsReportedInOneError() throws {
        let bad = fx["bad"]!.obj
        let dir = Fixtures.file(bad["folder"]!.str)
        do {
            _ = try FolderDataset.load(dir)
            XCTFail("the bad folder loaded")
        } catch let e as DataError {
            XCTAssertEqual(bad["message"]!.str, e.message.replacingOccurrences(of: dir.path, with: "<folder>"))
        }
    }

    func testNumpyPermutationsBitForBit() throws {
        for case let .object(c) in fx["permutations"]!.list {
            let seeds = c["seed"]!.ints
            XCTAssertEqual(c["permutation"]!.ints, NumpyRandom.of(seeds).permutation(c["n"]!.i), "default_rng(\(seeds)).permutation(\(c["n"]!.i))")
        }
    }

    func testTheStreamVisitsExamplesInTheRuntimesOrder() throws {
        let s = fx["stream"]!.obj
        let stream = try DataStream(size: s["size"]!.i, batchSize: s["batch_size"]!.i, position: StreamPosition(seed: s["seed"]!.i))
        for (i, batch) in s["batches"]!.list.enumerated() { XCTAssertEqual(batch.ints, stream.next(), "batch \(i)") }
    }

    struct Truncated: Error, CustomStringConvertible { var description: String { "truncated" } }

    func testUnreadableImagesAreReportedPerLine() throws {
        let dir = try Fixtures.copyTree(folder, try Fixtures.tempDir("data-").appendingPathComponent("d"))
        let broken = dir.appendingPathComponent("images/d2.png").path
        do {
            _ = try FolderDataset.load(dir, checkImage: { if $0.path == broken { throw Truncated() } })
            XCTFail("a broken image loaded")
        } catch let e as DataError {
            XCTAssertTrue(e.message.contains("line 3: cannot decode image '\(broken)' (Truncated: truncated)"), e.message)
        }
    }

    func testLinksOutOfTheFolderAreRefused() throws {
        let dir = try Fixtures.copyTree(folder, try Fixtures.tempDir("data-").appendingPathComponent("d"))
        let outside = dir.deletingLastPathComponent().appendingPathComponent("secret.png")
        try FileManager.default.copyItem(at: folder.appendingPathComponent("images/d0.png"), to: outside)
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("images/link.png"), withDestinationURL: outside)
        let annotations = try FileHandle(forWritingTo: dir.appendingPathComponent(FolderDataset.annotationsFile))
        annotations.seekToEndOfFile()
        annotations.write(Data(#"{"image": "link.png", "question": "q", "answer": "a"}"#.utf8 + [0x0A]))
        annotations.closeFile()
        do {
            _ = try FolderDataset.load(dir)
            XCTFail("a link out of the folder loaded")
        } catch let e as DataError {
            let real = outside.resolvingSymlinksInPath().standardizedFileURL.path
            XCTAssertTrue(e.message.contains("line 12: image 'link.png' is a link to \(real), outside the data folder"), e.message)
        }
    }

    func testBadLinesCanBeSkippedAndListed() throws {
        var skipped: [String] = []
        let dir = Fixtures.file("data_bad")
        let got = try FolderDataset.load(dir, skipBad: true, skipped: { skipped.append($0) })
        XCTAssertEqual(JSON.array([JSON(["q", "a"])]), rows(got))
        XCTAssertEqual(17, skipped.count)
        let annotations = dir.appendingPathComponent(FolderDataset.annotationsFile).path
        XCTAssertEqual("\(annotations):2: invalid JSON (Expecting value at column 1)", skipped.first)
        XCTAssertEqual("\(annotations):1", got[0].source)
    }
}
