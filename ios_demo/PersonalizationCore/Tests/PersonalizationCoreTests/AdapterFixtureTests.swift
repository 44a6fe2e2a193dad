import Foundation
import XCTest
@testable import PersonalizationCore

/// The personal adapter files, byte for byte, against fixtures/{adapters.json, adapters/} (runtime.adapter.write_adapter).
final class AdapterFixtureTests: XCTestCase {
    struct Source {
        let schedule: RankSchedule
        let trainable: [Trainable]
        let params: [String: [Float]]
    }

    private func source(_ fx: JSONObject, _ name: String) throws -> Source {
        let t = fx["tensors"]![name]!.obj
        var params: [String: [Float]] = [:]
        for (k, v) in t["params"]!.obj { params[k] = v.floats }
        if let manifest = t["manifest"] {
            let m = try Manifest.validateBundle(Fixtures.file(manifest.str).deletingLastPathComponent())
            return Source(schedule: m.schedule, trainable: m.trainable, params: params)
        }
        let trainable = t["trainable"]!.list.map { o in
            Trainable(name: o[Contract.TrainableKey.name]!.str, module: o[Contract.TrainableKey.module]!.str,
                      slot: o[Contract.TrainableKey.slot]!.str, role: o[Contract.TrainableKey.role]!.str,
                      param: o[Contract.TrainableKey.param]!.str, shape: o[Contract.TrainableKey.shape]!.ints,
                      dtype: o[Contract.TrainableKey.dtype]!.str)
        }
        return Source(schedule: try RankSchedule.read(t["schedule"]), trainable: trainable, params: params)
    }

    func testAdapterFilesAreByteIdentical() throws {
        let fx = try Fixtures.json("adapters.json")
        for case let .object(c) in fx["cases"]!.list {
            let s = try source(fx, c["tensors"]!.str)
            let files = try AdapterFiles.effectiveAdapter(s.schedule, s.trainable, fx["sdk_version"]!.str, s.params, c["masks"]!.list.map { $0.floats })
            let expected = c["files"]!.strings
            XCTAssertEqual(expected.map { URL(fileURLWithPath: $0).lastPathComponent }, files.keys)
            for path in expected {
                let want = [UInt8](try Data(contentsOf: Fixtures.file(path)))
                let got = files[URL(fileURLWithPath: path).lastPathComponent]!
                XCTAssertEqual(String(decoding: want, as: UTF8.self), String(decoding: got, as: UTF8.self), "\(path) as text")
                XCTAssertEqual(want, got, path)
            }
        }
    }

    func testWrittenFilesReadBack() throws {
        let fx = try Fixtures.json("adapters.json")
        let c = fx["cases"]!.list[0].obj
        let s = try source(fx, c["tensors"]!.str)
        let dir = try AdapterFiles.write(try Fixtures.tempDir("adapter-").appendingPathComponent("out"),
                                         try AdapterFiles.effectiveAdapter(s.schedule, s.trainable, "x", s.params, c["masks"]!.list.map { $0.floats }))
        let (tensors, metadata) = try Safetensors.read(dir.appendingPathComponent(AdapterFiles.weightsFile))
        XCTAssertNotNil(metadata[AdapterFiles.metadataKey])
        XCTAssertEqual(6, tensors.count)
        // q_proj at the soft mask [1, 1, 0.3, 0]: 3 active ranks of 16 inputs.
        XCTAssertTrue(tensors.values.contains { $0.shape == [3, 16] })
    }
}
