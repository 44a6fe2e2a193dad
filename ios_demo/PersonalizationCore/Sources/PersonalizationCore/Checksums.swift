import Foundation

/// SHA-256 (FIPS 180-4), written here because CryptoKit is not on Linux and the core needs no
/// dependency; streamed, so a 100 MB backbone is hashed in 1 MiB chunks.
public struct SHA256 {
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public init() {}

    public mutating func update<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        for b in bytes {
            buffer.append(b)
            length &+= 1
            if buffer.count == 64 {
                compress(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
    }

    public mutating func finish() -> [UInt8] {
        let bits = length &* 8
        update([0x80] as [UInt8])
        length &-= 1
        while buffer.count != 56 {
            update([0] as [UInt8])
            length &-= 1
        }
        for i in (0..<8).reversed() { buffer.append(UInt8((bits >> (UInt64(i) * 8)) & 0xFF)) }
        compress(buffer)
        buffer.removeAll()
        return h.flatMap { w in (0..<4).map { UInt8((w >> (24 - 8 * UInt32($0))) & 0xFF) } }
    }

    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    private mutating func compress(_ block: [UInt8]) {
        var w = [UInt32](repeating: 0, count: 64)
        for t in 0..<16 {
            w[t] = UInt32(block[4 * t]) << 24 | UInt32(block[4 * t + 1]) << 16 | UInt32(block[4 * t + 2]) << 8 | UInt32(block[4 * t + 3])
        }
        for t in 16..<64 {
            let s0 = SHA256.rotr(w[t - 15], 7) ^ SHA256.rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            let s1 = SHA256.rotr(w[t - 2], 17) ^ SHA256.rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
        }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
        for t in 0..<64 {
            let s1 = SHA256.rotr(e, 6) ^ SHA256.rotr(e, 11) ^ SHA256.rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ SHA256.k[t] &+ w[t]
            let s0 = SHA256.rotr(a, 2) ^ SHA256.rotr(a, 13) ^ SHA256.rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
        }
        h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        var out = ""
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return out
    }
}

/// sha256 and size of a bundle entry exactly as mobile_peft/core/manifest.py `sha256_of` /
/// `size_of` compute them: a file's bytes; for a directory (an `.mlpackage`), for each file under
/// it in Python's `sorted(Path)` order (component by component, by code point) its POSIX path
/// relative to the directory, a NUL byte, then its bytes. Like `Path.rglob`, directory symlinks are
/// not descended into.
public enum Checksums {
    private static let chunk = 1 << 20

    static func isDirectory(_ url: URL) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) && dir.boolValue
    }

    static func isFile(_ url: URL) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) && !dir.boolValue
    }

    private static func isSymlink(_ url: URL) -> Bool {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)) != nil
    }

    /// Files under `dir` with their relative POSIX paths, in Python's sorted-`Path` order.
    public static func filesUnder(_ dir: URL) -> [(String, URL)] {
        var out: [([String], URL)] = []
        func walk(_ d: URL, _ parts: [String]) {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? []
            for name in names {
                let child = d.appendingPathComponent(name)
                let p = parts + [name]
                if isDirectory(child) {
                    if !isSymlink(child) { walk(child, p) }
                } else if isFile(child) {
                    out.append((p, child))
                }
            }
        }
        walk(dir, [])
        out.sort { a, b in
            for k in 0..<min(a.0.count, b.0.count) {
                let c = Py.compare(a.0[k], b.0[k])
                if c != 0 { return c < 0 }
            }
            return a.0.count < b.0.count
        }
        return out.map { ($0.0.joined(separator: "/"), $0.1) }
    }

    private static func fileSize(_ url: URL) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    public static func sizeOf(_ url: URL) -> Int {
        isFile(url) ? fileSize(url) : filesUnder(url).reduce(0) { $0 + fileSize($1.1) }
    }

    public static func sha256Of(_ url: URL) throws -> String {
        var md = SHA256()
        let single = isFile(url)
        let entries = single ? [("", url)] : filesUnder(url)
        for (rel, file) in entries {
            if !single {
                md.update(Array(rel.utf8))
                md.update([0] as [UInt8])
            }
            guard let handle = FileHandle(forReadingAtPath: file.path) else {
                throw CheckpointError("cannot read \(file.path)")
            }
            defer { handle.closeFile() }
            while true {
                let data = handle.readData(ofLength: chunk)
                if data.isEmpty { break }
                md.update(data)
            }
        }
        return SHA256.hex(md.finish())
    }

    public static func sha256Of(bytes: [UInt8]) -> String {
        var md = SHA256()
        md.update(bytes)
        return SHA256.hex(md.finish())
    }
}
