import Darwin
import Foundation

/// Crash-safe checkpoints: each file is written to a temp file in the same directory, fsynced, then
/// `rename(2)`d over the old one (atomic within a file system), and the directory is fsynced.
/// The file names are this app's own, not part of the bundle contract.
enum Checkpoint {
    static let etParametersFile = "adapters_checkpoint.ptd"     // resumable: passed back to the runtime as the .ptd
    static let tensorsFile = "adapter_tensors.safetensors"      // the same tensors for the SDK (F32, manifest names)
    static let ortCheckpointFile = "ort_checkpoint"              // ONNX Runtime's own checkpoint (weights + optimiser)
    static let coremlHeadFile = "head_updated.mlmodelc"          // Core ML's updated head (a directory)
    static let stateFile = "trainer_state.json"

    static func fsync(_ url: URL) {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { return }
        _ = Darwin.fsync(fd)
        close(fd)
    }

    static func writeAtomic(_ target: URL, _ write: (URL) throws -> Void) throws {
        let dir = target.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tmp = dir.appendingPathComponent(".\(target.lastPathComponent).tmp")
        try? FileManager.default.removeItem(at: tmp)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try write(tmp)
        fsync(tmp)
        if Manifest.isDirectory(tmp) {
            // rename(2) cannot replace a non-empty directory: move the old one aside first.
            let old = dir.appendingPathComponent(".\(target.lastPathComponent).old")
            try? FileManager.default.removeItem(at: old)
            if FileManager.default.fileExists(atPath: target.path) { try FileManager.default.moveItem(at: target, to: old) }
            try FileManager.default.moveItem(at: tmp, to: target)
            try? FileManager.default.removeItem(at: old)
        } else if rename(tmp.path, target.path) != 0 {
            throw BundleError("rename \(tmp.path) -> \(target.path) failed: errno \(errno)")
        }
        fsync(dir)
    }

    static func writeState(_ dir: URL, step: Int, manifest: Manifest) throws {
        let state: [String: Any] = ["step": step, "format": manifest.format, "bundle_files": manifest.files.map(\.sha256)]
        let data = try JSONSerialization.data(withJSONObject: state, options: [.prettyPrinted, .sortedKeys])
        try writeAtomic(dir.appendingPathComponent(stateFile)) { try data.write(to: $0) }
    }

    /// The saved step, or nil when `dir` holds no checkpoint of this very bundle (same file hashes).
    static func readState(_ dir: URL, manifest: Manifest) -> Int? {
        guard let data = try? Data(contentsOf: dir.appendingPathComponent(stateFile)),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              o["bundle_files"] as? [String] == manifest.files.map(\.sha256), o["format"] as? String == manifest.format
        else { return nil }
        return o["step"] as? Int
    }

    /// safetensors: u64 LE header length, JSON header padded with spaces to 8 bytes, raw LE F32 data.
    static func writeSafetensors(_ target: URL, tensors: [String: (shape: [Int64], data: Data)], metadata: [String: String]) throws {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + t.data.count]]
            offset += t.data.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names { out.append(tensors[name]!.data) } // Apple platforms are little-endian
        try writeAtomic(target) { try out.write(to: $0) }
    }
}
