import Foundation

/// Allocation units (mobile_peft/core/units.py): one rank slot of one adapted module, keyed
/// `"<module path>::<slot>"`, and where a module sits in the VLM (tower, layer, block).
public enum Units {
    public static let separator = "::"
    private static let mlpNames = ["mlp", "fc1", "fc2", "gate_proj", "up_proj", "down_proj"]
    private static let layerDirs = ["layers", "layer", "h", "blocks"]

    public struct Place: Equatable {
        public let tower: String
        public let layer: Int
        public let kind: String
        public let block: String
    }

    public static func key(_ module: String, _ slot: String) -> String { module + separator + slot }

    /// `(module, slot)` of a unit key (split at the last separator, as `str.rpartition`).
    public static func split(_ key: String) -> (String, String) {
        guard let r = key.range(of: separator, options: .backwards) else { return ("", key) }
        return (String(key[..<r.lowerBound]), String(key[r.upperBound...]))
    }

    /// The first `.(layers|layer|h|blocks).<digits>.` in `path` (the regex of units.py, leftmost
    /// match): the layer number and the index just past its closing dot.
    private static func layerMatch(_ path: String) -> (Int, String.Index)? {
        let chars = Array(path)
        var i = 0
        while i < chars.count {
            if chars[i] == "." {
                for dir in layerDirs {
                    let d = Array(dir)
                    var j = i + 1
                    guard j + d.count < chars.count, Array(chars[j..<(j + d.count)]) == d, chars[j + d.count] == "." else { continue }
                    j += d.count + 1
                    let start = j
                    while j < chars.count && chars[j].isASCII && chars[j].isNumber { j += 1 }
                    if j > start && j < chars.count && chars[j] == "." {
                        return (Int(String(chars[start..<j]))!, path.index(path.startIndex, offsetBy: j + 1))
                    }
                }
            }
            i += 1
        }
        return nil
    }

    /// `module_place`: parse a path such as `language_model.model.layers.3.mlp.up_proj`.
    public static func place(_ path: String) -> Place {
        let tower: String
        if path.hasPrefix("vision_tower") || path.contains(".vision") {
            tower = "vision"
        } else if path.contains("projector") {
            tower = "projector"
        } else if path.hasPrefix("language_model") || path.contains("language") {
            tower = "language"
        } else {
            tower = "other"
        }
        let match = layerMatch(path)
        let layer = match?.0 ?? 0
        let kind: String
        if let m = match {
            kind = String(path[m.1...])
        } else if let dot = path.lastIndex(of: ".") {
            kind = String(path[path.index(after: dot)...])
        } else {
            kind = path
        }
        let block = tower == "projector" ? "proj" : (mlpNames.contains { kind.contains($0) } ? "mlp" : "attn")
        return Place(tower: tower, layer: layer, kind: kind, block: block)
    }

    /// `units_to_ranks`: `{"path::slot": r}` -> `{path: {slot: r}}`.
    public static func toRanks(_ units: OrderedDict<Int>) -> Ranks {
        var out: Ranks = [:]
        for (key, r) in units {
            let (m, s) = split(key)
            out[m, default: [:]][s] = r
        }
        return out
    }

    /// `ranks_to_units`: `{path: {slot: r}}` -> `{"path::slot": r}` for the given units.
    public static func fromRanks(_ ranks: Ranks, _ units: [String]) throws -> OrderedDict<Int> {
        var out = OrderedDict<Int>()
        for u in units {
            let (m, s) = split(u)
            guard let r = ranks[m]?[s] else { throw ConfigError("ranks have no entry for unit \(u)") }
            out[u] = r
        }
        return out
    }
}
