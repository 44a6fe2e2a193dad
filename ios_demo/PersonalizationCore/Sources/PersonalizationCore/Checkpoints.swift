import Foundation
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// Crash-safe writes: a file or a whole directory is written under a temporary name, fsynced, then
/// renamed into place (`rename(2)` within one file system is atomic), so a killed app leaves the
/// old version or the new one, never half of one.
public enum AtomicFiles {
    public static func write(_ target: URL, _ bytes: [UInt8]) throws {
        let dir = target.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tmp = dir.appendingPathComponent(".\(target.lastPathComponent).tmp")
        defer { try? FileManager.default.removeItem(at: tmp) }
        guard FileManager.default.createFile(atPath: tmp.path, contents: Data(bytes)) else {
            throw CheckpointError("cannot write \(tmp.path)")
        }
        syncFile(tmp)
        if rename(tmp.path, target.path) != 0 { throw CheckpointError("cannot rename \(tmp.path) to \(target.path) (errno \(errno))") }
        syncDirectory(dir)
    }

    /// fsync one file or directory; best effort (not every file system allows it for directories).
    public static func syncFile(_ url: URL) {
        let fd = open(url.path, O_RDONLY)
        if fd >= 0 {
            _ = fsync(fd)
            _ = close(fd)
        }
    }

    /// fsync a directory so a rename in it survives power loss.
    public static func syncDirectory(_ dir: URL) { syncFile(dir) }

    public static func syncTree(_ dir: URL) {
        for (_, file) in Checksums.filesUnder(dir) { syncFile(file) }
        syncDirectory(dir)
    }
}

/// A run's checkpoints, as runtime/checkpoint.py lays them out:
///
///     <run>/checkpoints/ckpt-00000012/   one complete checkpoint (step 12): meta.json + the trainer's files
///     <run>/checkpoints/.tmp-00000015-*  one being written (ignored; removed by the next save)
///
/// `save` writes everything into the temporary directory, fsyncs it, then renames it to
/// `ckpt-<step>`; the newest `keep` are kept. `meta.json` is the loop's state (step, data position,
/// masks, losses, ...); the trainer writes its weights and optimiser state beside it.
public final class CheckpointStore {
    public static let dirName = "checkpoints"
    public static let prefix = "ckpt-"
    public static let tmpPrefix = ".tmp-"
    public static let metaFile = "meta.json"
    public static let stepKey = "step"

    public let runDir: URL
    public let keep: Int
    public let root: URL

    public init(_ runDir: URL, keep: Int = 2) throws {
        if keep < 1 { throw ConfigError("keep=\(keep) checkpoints; expected >= 1.") }
        self.runDir = runDir
        self.keep = keep
        root = runDir.appendingPathComponent(CheckpointStore.dirName)
    }

    private static func padded(_ step: Int) -> String {
        let s = String(step)
        return String(repeating: "0", count: max(0, 8 - s.count)) + s
    }

    private func children() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? [] }

    public func save(_ step: Int, _ meta: JSONObject, _ writeTrainer: (URL) throws -> Void) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: root, withIntermediateDirectories: true)
        for name in children() where name.hasPrefix(CheckpointStore.tmpPrefix) { try? fm.removeItem(at: root.appendingPathComponent(name)) }
        let tmp = root.appendingPathComponent("\(CheckpointStore.tmpPrefix)\(CheckpointStore.padded(step))-\(DispatchTime.now().uptimeNanoseconds)")
        do { try fm.createDirectory(at: tmp, withIntermediateDirectories: false) } catch { throw CheckpointError("cannot create \(tmp.path)") }
        try writeTrainer(tmp)
        var full = meta
        full[CheckpointStore.stepKey] = .int(step)
        let text = Json.dumps(.object(full), indent: 1) + "\n"
        guard fm.createFile(atPath: tmp.appendingPathComponent(CheckpointStore.metaFile).path, contents: Data(text.utf8)) else {
            throw CheckpointError("cannot write \(tmp.path)/\(CheckpointStore.metaFile)")
        }
        AtomicFiles.syncTree(tmp)
        let final = dirOf(step)
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) } // the same step saved again (a resumed run re-reaching it)
        if rename(tmp.path, final.path) != 0 { throw CheckpointError("cannot rename \(tmp.path) to \(final.path) (errno \(errno))") }
        AtomicFiles.syncDirectory(root)
        for old in complete().dropLast(keep) { try? fm.removeItem(at: old) }
        return final
    }

    /// Complete checkpoints, oldest first.
    public func complete() -> [URL] {
        children().filter { name in
            let dir = root.appendingPathComponent(name)
            return name.hasPrefix(CheckpointStore.prefix) && Checksums.isDirectory(dir) && Checksums.isFile(dir.appendingPathComponent(CheckpointStore.metaFile))
        }.sorted().map { root.appendingPathComponent($0) }
    }

    public func latest() -> URL? { complete().last }

    public func meta(_ dir: URL) throws -> JSONObject {
        let file = dir.appendingPathComponent(CheckpointStore.metaFile)
        do {
            guard let o = try Json.parseFile(file).object else { throw CheckpointError("\(file.path) is not a JSON object") }
            return o
        } catch let e as JsonError {
            throw CheckpointError("\(file.path) is not valid JSON (\(e.message)); delete \(dir.path) to fall back to the previous checkpoint.")
        }
    }

    private func dirOf(_ step: Int) -> URL { root.appendingPathComponent("\(CheckpointStore.prefix)\(CheckpointStore.padded(step))") }
}
