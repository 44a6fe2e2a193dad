import Foundation

/// A float32 tensor: its shape and its values, row-major.
public struct Tensor: Equatable {
    public let shape: [Int]
    public let data: [Float]
    public init(_ shape: [Int], _ data: [Float]) throws {
        if shape.reduce(1, *) != data.count { throw ConfigError("shape \(shape) does not hold \(data.count) values") }
        self.shape = shape
        self.data = data
    }
}

/// safetensors files: u64 little-endian header length, the JSON header (space-padded to a multiple
/// of 8 bytes), the raw little-endian data. `bytes` is mobile_peft/core/adapter_files.py
/// `safetensors_bytes`: tensors in key order, the header compact with sorted metadata first, so the
/// same tensors always give the same bytes (the reference library orders metadata by hash). Float32
/// only: what the phone trains.
public enum Safetensors {
    public static let metadataKey = "__metadata__"
    public static let f32 = "F32"
    private static let dtype = "dtype"
    private static let shape = "shape"
    private static let offsets = "data_offsets"

    public static func bytes(_ tensors: [String: Tensor], metadata: [String: String]) -> [UInt8] {
        var header = JSONObject()
        header[metadataKey] = .object(JSONObject(Py.sorted(Array(metadata.keys)).map { ($0, JSON.string(metadata[$0]!)) }))
        let keys = Py.sorted(Array(tensors.keys))
        var offset = 0
        for k in keys {
            let t = tensors[k]!
            let end = offset + 4 * t.data.count
            header[k] = [dtype: .string(f32), shape: JSON(t.shape), offsets: JSON([offset, end])]
            offset = end
        }
        var text = Array(Json.dumps(.object(header), itemSeparator: ",", keySeparator: ":").utf8)
        text += [UInt8](repeating: 0x20, count: (8 - text.count % 8) % 8)
        var out: [UInt8] = []
        out.reserveCapacity(8 + text.count + offset)
        let n = UInt64(text.count)
        for i in 0..<8 { out.append(UInt8((n >> (8 * UInt64(i))) & 0xFF)) }
        out += text
        for k in keys {
            for v in tensors[k]!.data {
                let bits = v.bitPattern
                for i in 0..<4 { out.append(UInt8((bits >> (8 * UInt32(i))) & 0xFF)) }
            }
        }
        return out
    }

    /// `(tensors, metadata)` of a float32 safetensors file.
    public static func read(_ bytes: [UInt8], source: String = "safetensors") throws -> ([String: Tensor], [String: String]) {
        func bad(_ why: String) -> CheckpointError { CheckpointError("\(source) is not a readable safetensors file: \(why)") }
        if bytes.count < 8 { throw bad("\(bytes.count) bytes") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        if n > UInt64(bytes.count - 8) { throw bad("header length \(n)") }
        let base = 8 + Int(n)
        guard let text = String(bytes: bytes[8..<base], encoding: .utf8) else { throw bad("the header is not UTF-8") }
        let parsed: JSON
        do { parsed = try Json.parse(text) } catch let e as JsonError { throw bad("the header is not JSON (\(e.message))") }
        guard let header = parsed.object else { throw bad("the header is not an object") }
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        for (key, value) in header {
            guard let o = value.object else { throw bad("entry \(Py.repr(key)) is not an object") }
            if key == metadataKey {
                for (k, v) in o { metadata[k] = Py.str(v) }
                continue
            }
            if o[dtype] != .string(f32) { throw bad("tensor \(Py.repr(key)) is \(Py.repr(o[dtype])); this reader holds \(f32) only") }
            guard let dims = o[shape]?.array else { throw bad("tensor \(Py.repr(key)) has no shape") }
            let shapeValues = try dims.map { d -> Int in
                guard let v = d.int else { throw bad("tensor \(Py.repr(key)) has shape \(Py.repr(o[shape]))") }
                return v
            }
            guard let offs = o[offsets]?.array, offs.count == 2, let start = offs[0].int, let end = offs[1].int else {
                throw bad("tensor \(Py.repr(key)) has no data_offsets")
            }
            if start < 0 || end < start || base + end > bytes.count || (end - start) % 4 != 0 {
                throw bad("tensor \(Py.repr(key)) has offsets [\(start), \(end)]")
            }
            var values = [Float](repeating: 0, count: (end - start) / 4)
            for i in values.indices {
                let p = base + start + 4 * i
                let bits = UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p + 2]) << 16 | UInt32(bytes[p + 3]) << 24
                values[i] = Float(bitPattern: bits)
            }
            do { tensors[key] = try Tensor(shapeValues, values) } catch { throw bad("tensor \(Py.repr(key)): \(errorMessage(error))") }
        }
        return (tensors, metadata)
    }

    public static func read(_ url: URL) throws -> ([String: Tensor], [String: String]) {
        try read([UInt8](try Data(contentsOf: url)), source: url.path)
    }
}
