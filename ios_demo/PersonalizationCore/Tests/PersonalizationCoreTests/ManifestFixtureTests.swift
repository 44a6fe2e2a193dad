import Foundation
import XCTest
@testable import PersonalizationCore

/// The bundle, its schedule and the validator against fixtures/{bundle, schedule.json, manifest_problems.json}.
final class ManifestFixtureTests: XCTestCase {
    let bundle = Fixtures.file("bundle")

    func testTheSdksBundleValidates() throws {
        let m = try Manifest.validateBundle(bundle)
        XCTAssertEqual(Contract.formatOnnx, m.format)
        XCTAssertEqual(6, m.trainable.count)
        XCTAssertEqual([Contract.roleDown, Contract.roleUp], m.slotPairs().values.first!.keys)
        XCTAssertEqual(12, m.inputSpec.spec.imageSize)
        XCTAssertEqual(TokenIds(pad: 0, bos: 1, eos: 2, ignoreIndex: Contract.ignoreIndex), m.inputSpec.tokenIds)
        XCTAssertEqual(3, m.schedule.maskInputs.count)
        XCTAssertTrue(m.schedule.hasScales)
        XCTAssertEqual(0.001, m.optimizer.lr)
        XCTAssertEqual(5, m.files.count)
    }

    func testEveryProblemIsPythons() throws {
        let manifest = try Json.parseFile(bundle.appendingPathComponent(Contract.manifestFile))
        let fx = try Fixtures.json("manifest_problems.json")
        for c in fx["cases"]!.list {
            let edited = applyOps(manifest, c["ops"]!.list)
            XCTAssertEqual(c["problems"]!.strings, manifestProblems(edited), "case '\(c["name"]!.str)'")
        }
    }

    func testDamagedFilesAreReportedAsPythonReportsThem() throws {
        let fx = try Fixtures.json("manifest_problems.json")
        for c in fx["tampered"]!.list {
            let copy = try Fixtures.copyTree(bundle, try Fixtures.tempDir("bundle-").appendingPathComponent("b"))
            for (name, action) in c["actions"]!.obj {
                let f = copy.appendingPathComponent(name)
                switch action.str {
                case "append":
                    var data = try Data(contentsOf: f)
                    data.append(UInt8(ascii: "!"))
                    try data.write(to: f)
                case "flip":
                    var data = [UInt8](try Data(contentsOf: f))
                    data[0] ^= 1
                    try Data(data).write(to: f)
                default:
                    try FileManager.default.removeItem(at: f)
                }
            }
            do {
                _ = try Manifest.validateBundle(copy)
                XCTFail("case '\(c["name"]!.str)' validated")
            } catch let e as BundleError {
                XCTAssertEqual(c["problems"]!.strings, e.problems, "case '\(c["name"]!.str)'")
                XCTAssertEqual("bundle \(copy.path) is invalid:\n  - " + e.problems.joined(separator: "\n  - "), e.message)
            }
        }
    }

    func testPhasesRanksAndMasksArePythons() throws {
        let fx = try Fixtures.json("schedule.json")
        let s = try Manifest.validateBundle(bundle).schedule
        for (step, index) in fx["phase_index"]!.obj { XCTAssertEqual(index.i, s.phaseIndex(Int(step)!), "phase at step \(step)") }
        for (i, p) in fx["phases"]!.list.enumerated() {
            var ranks: Ranks = [:]
            for (m, slots) in p["ranks"]!.obj { ranks[m] = slots.intMap }
            XCTAssertEqual(ranks, s.ranks(i), "ranks of phase \(i)")
            XCTAssertEqual(p["params"]!.i, try s.params(s.ranks(i)), "params of phase \(i)")
            let masks = try s.phaseMasks(i)
            for (j, m) in p["masks"]!.list.enumerated() { assertBitIdentical(m.floats, masks[j], "phase \(i) mask \(j)") }
        }
        let units = OrderedDict(fx["units"]!.obj.pairs.map { u, v in
            (u, UnitInfo(rMax: v[Contract.SlotKey.rMax]!.i, paramsPerRank: v[Contract.SlotKey.paramsPerRank]!.i))
        })
        XCTAssertEqual(units, s.units())
        XCTAssertEqual(units.keys, s.units().keys)
    }

    func testChecksumsArePythons() throws {
        let fx = try Fixtures.json("checksums.json")
        let tree = Fixtures.file("checksums")
        XCTAssertEqual(fx["directory"]!["sha256"]!.str, try Checksums.sha256Of(tree))
        XCTAssertEqual(fx["directory"]!["size"]!.i, Checksums.sizeOf(tree))
        for (name, v) in fx["files"]!.obj {
            XCTAssertEqual(v["sha256"]!.str, try Checksums.sha256Of(tree.appendingPathComponent(name)), name)
            XCTAssertEqual(v["size"]!.i, Checksums.sizeOf(tree.appendingPathComponent(name)), name)
        }
    }

    func testSha256OfKnownVectors() {
        // FIPS 180-4 examples, and a message that needs a second padding block.
        XCTAssertEqual("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Checksums.sha256Of(bytes: []))
        XCTAssertEqual("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Checksums.sha256Of(bytes: Array("abc".utf8)))
        XCTAssertEqual("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                       Checksums.sha256Of(bytes: Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
    }
}
