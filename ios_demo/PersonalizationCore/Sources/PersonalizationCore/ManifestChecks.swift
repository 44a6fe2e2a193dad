import Foundation

/// `manifest_problems` (mobile_peft/core/manifest.py): missing keys and sub-keys, the type of
/// every value the phone reads, then (once those hold) the trainable tensors against the schedule,
/// the schedule itself and that every file the manifest names is one it checksums.
enum ManifestChecks {
    private static let trainableDtypes = ["float32", "float16"]

    /// One JSON value's declared type (mobile_peft/core/fields.py `Field`): `kind` is a JSON Schema
    /// type name; `minimum` for numbers, `length` / `items` for arrays, `contains` for strings
    /// that must hold a substring, `path` for file names inside the bundle, `hex64` for digests.
    final class Field {
        let kind: String
        let minimum: Double?
        let exclusive: Bool
        let length: Int?
        let items: Field?
        let contains: String?
        let path: Bool
        let hex64: Bool
        let nullable: Bool

        init(_ kind: String, minimum: Double? = nil, exclusive: Bool = false, length: Int? = nil, items: Field? = nil,
             contains: String? = nil, path: Bool = false, hex64: Bool = false, nullable: Bool = false) {
            self.kind = kind
            self.minimum = minimum
            self.exclusive = exclusive
            self.length = length
            self.items = items
            self.contains = contains
            self.path = path
            self.hex64 = hex64
            self.nullable = nullable
        }

        func check(_ value: JSON?) -> Bool {
            guard let v = value, !v.isNull else { return nullable }
            switch kind {
            case "string":
                guard let s = v.string else { return false }
                return (contains == nil || s.contains(contains!)) && (!path || ManifestChecks.isRelativePath(v)) &&
                    (!hex64 || (s.unicodeScalars.count == 64 && s.unicodeScalars.allSatisfy { "0123456789abcdef".unicodeScalars.contains($0) }))
            case "boolean": return v.bool != nil
            case "object": return v.object != nil
            case "array":
                guard let a = v.array else { return false }
                return (length == nil || a.count == length) && (items == nil || a.allSatisfy { items!.check($0) })
            default:
                let number: Double
                switch v {
                case .int(let n): number = Double(n)
                case .double(let d):
                    if kind == "integer" || !d.isFinite { return false }
                    number = d
                default: return false
                }
                guard let m = minimum else { return true }
                return exclusive ? number > m : number >= m
            }
        }

        func describe() -> String {
            var text = Field.names[kind]!
            if let m = minimum { text += " \(exclusive ? ">" : ">=") \(Field.g(m))" }
            if let n = length {
                text = "a list of \(n)" + (items.map { " (\($0.describe()))" } ?? "")
            } else if let i = items {
                text += " of \(i.describe())"
            }
            if let c = contains { text += " containing \(c)" }
            if path { text = "a relative path inside the bundle" }
            if hex64 { text = "64 hex digits" }
            return text + (nullable ? " or null" : "")
        }

        static func g(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e16 ? String(Int(x)) : Py.floatRepr(x) }

        static let names = [
            "string": "a string", "integer": "a whole number", "number": "a finite number",
            "boolean": "true or false", "object": "an object", "array": "a list",
        ]
    }

    private static let string = Field("string")
    private static let boolean = Field("boolean")
    private static let object = Field("object")
    private static let array = Field("array")
    private static let pathField = Field("string", path: true)
    private static let sha256 = Field("string", hex64: true)
    private static func integer(_ minimum: Int? = nil) -> Field { Field("integer", minimum: minimum.map { Double($0) }) }
    private static func positive() -> Field { Field("number", minimum: 0, exclusive: true) }

    /// A file name inside the bundle: relative, no `..`, no backslash.
    static func isRelativePath(_ v: JSON?) -> Bool {
        guard let s = v?.string else { return false }
        return !s.isEmpty && !s.contains("\\") && !s.hasPrefix("/") && !s.split(separator: "/", omittingEmptySubsequences: false).contains("..")
    }

    static let pathMethods = [
        Contract.MethodKey.program, Contract.MethodKey.trainableData, Contract.MethodKey.trainingModel,
        Contract.MethodKey.evalModel, Contract.MethodKey.optimizerModel, Contract.MethodKey.checkpoint,
    ]
    private static let pteMethod = "pte_method"

    /// `FIELD_TYPES` (the sections the validator checks), in its order.
    private static let types: [String: [(String, Field)]] = {
        let rgb = Field("array", length: 3, items: Field("number"))
        let sizes = Field("array", items: integer(0))
        return [
            "": [
                (Contract.Key.schema, string), (Contract.Key.schemaVersion, integer()), (Contract.Key.format, string),
                (Contract.Key.sdkVersion, string), (Contract.Key.model, object), (Contract.Key.inputSpec, object),
                (Contract.Key.methods, object), (Contract.Key.trainable, array), (Contract.Key.rankSchedule, object),
                (Contract.Key.performanceModel, Field("object", nullable: true)), (Contract.Key.optimizer, object),
                (Contract.Key.backbone, object), (Contract.Key.files, array), (Contract.Key.memoryBound, object),
            ],
            Contract.Key.model: [
                (Contract.ModelKey.name, string), (Contract.ModelKey.quant, string), (Contract.ModelKey.parameters, integer(0)),
                (Contract.ModelKey.numImageTokens, integer(0)), (Contract.ModelKey.vocabSize, integer(1)),
            ],
            Contract.Key.inputSpec: [
                (Contract.InputSpecKey.imageSize, integer(1)),
                (Contract.InputSpecKey.imageMean, rgb),
                (Contract.InputSpecKey.imageStd, Field("array", length: 3, items: positive())),
                (Contract.InputSpecKey.promptTemplate, Field("string", contains: SpecDefaults.questionPlaceholder)),
                (Contract.InputSpecKey.maxTextLen, integer(3)),
                (Contract.InputSpecKey.lowercase, boolean),
                (Contract.InputSpecKey.sequenceLength, integer(1)),
                (Contract.InputSpecKey.batchSize, integer(1)),
                (Contract.InputSpecKey.tokenIds, object),
                (Contract.InputSpecKey.tokenizerFile, pathField),
                (Contract.InputSpecKey.padToken, string),
                (Contract.InputSpecKey.bosToken, string),
                (Contract.InputSpecKey.eosToken, string),
            ],
            "\(Contract.Key.inputSpec).\(Contract.InputSpecKey.tokenIds)": [
                (Contract.TokenIdKey.pad, integer(0)), (Contract.TokenIdKey.bos, integer(0)),
                (Contract.TokenIdKey.eos, integer(0)), (Contract.TokenIdKey.ignoreIndex, integer()),
            ],
            Contract.Key.optimizer: [(Contract.OptimizerKey.name, string), (Contract.OptimizerKey.lr, positive())],
            Contract.Key.backbone: [
                (Contract.BackboneKey.quant, string), (Contract.BackboneKey.bytesByDtype, object), (Contract.BackboneKey.totalBytes, integer(0)),
            ],
            Contract.Key.memoryBound: Contract.memoryBoundKeys.map { k in
                (k, k == Contract.MemoryBoundKey.batchSize ? integer(1) : k == Contract.MemoryBoundKey.countedBy ? string : integer(0))
            },
            Contract.Key.trainable: Contract.trainableKeys.map { ($0, $0 == Contract.TrainableKey.shape ? sizes : string) },
            Contract.Key.files: [(Contract.FileKey.path, pathField), (Contract.FileKey.sha256, sha256), (Contract.FileKey.size, integer(0))],
            Contract.Key.methods: pathMethods.map { ($0, pathField) } + [
                (Contract.MethodKey.train, object), (Contract.MethodKey.eval, object), (Contract.MethodKey.trainInputs, array),
                (Contract.MethodKey.outputs, array), (Contract.MethodKey.backbone, object), (Contract.MethodKey.head, object),
            ],
            pteMethod: [
                (Contract.MethodKey.method, string), (Contract.MethodKey.inputs, array), (Contract.MethodKey.outputs, array),
                (Contract.MethodKey.gradientsIndexMethod, string), (Contract.MethodKey.parametersIndexMethod, string),
                (Contract.MethodKey.fqnMethod, string),
            ],
        ]
    }()

    /// `_missing`: missing keys of `section` and values of the wrong type (`types[types]`, default `where`).
    private static func missing(_ section: JSON?, _ keys: [String], _ at: String, types key: String? = nil) -> [String] {
        guard let s = section?.object else { return ["\(at) is a \(Py.typeName(section)), expected an object"] }
        var out = keys.filter { !s.contains($0) }.map { "missing key \(at).\($0)" }
        for (k, field) in types[key ?? at] ?? [] {
            if s.contains(k) && !field.check(s[k]) {
                out.append("\(at).\(k) is \(Py.repr(.string(Py.head(s[k], 60)))); expected \(field.describe())")
            }
        }
        return out
    }

    static func problems(_ value: JSON?) -> [String] {
        guard let manifest = value?.object else { return ["the manifest is a \(Py.typeName(value)), expected an object"] }
        var out = Contract.requiredKeys.filter { !manifest.contains($0) }.map { "missing key \(Py.repr($0))" }
        if manifest.contains(Contract.Key.schema) && manifest[Contract.Key.schema] != .string(Contract.schemaName) {
            out.append("schema is \(Py.repr(manifest[Contract.Key.schema])); expected \(Py.repr(Contract.schemaName))")
        }
        let version = manifest[Contract.Key.schemaVersion]
        if manifest.contains(Contract.Key.schemaVersion) && !Contract.supportedSchemaVersions.contains(where: { Py.equal(version, .int($0)) }) {
            out.append("schema_version is \(Py.repr(version)); this mobile-peft reads \(Py.repr(Contract.supportedSchemaVersions)) " +
                "(upgrade mobile-peft for a newer bundle, or re-export an older one)")
        }
        if manifest.contains(Contract.Key.format) && !Contract.formats.contains(where: { manifest[Contract.Key.format] == .string($0) }) {
            out.append("format \(Py.repr(manifest[Contract.Key.format])) is unknown; expected one of \(Py.repr(Contract.formats))")
        }
        out += missing(value, [], "")
        for (key, keys) in [
            (Contract.Key.model, Contract.modelKeys),
            (Contract.Key.inputSpec, Contract.inputSpecKeys),
            (Contract.Key.optimizer, Contract.optimizerKeys),
            (Contract.Key.backbone, Contract.backboneKeys),
        ] where manifest[key]?.object != nil {
            out += missing(manifest[key], keys, key)
        }
        if let spec = manifest[Contract.Key.inputSpec]?.object, spec[Contract.InputSpecKey.tokenIds]?.object != nil {
            out += missing(spec[Contract.InputSpecKey.tokenIds], Contract.tokenIdKeys, "\(Contract.Key.inputSpec).\(Contract.InputSpecKey.tokenIds)")
        }
        out += listOfObjects(manifest, Contract.Key.trainable, Contract.trainableKeys)
        out += listOfObjects(manifest, Contract.Key.files, Contract.fileKeys)
        out += methodsProblems(manifest)
        out += memoryBoundProblems(manifest)
        if !out.isEmpty { return out } // the semantic checks below read these sections as typed
        out += scheduleProblems(manifest)
        if !out.isEmpty { return out } // trainable shapes are checked against a well-formed schedule
        out += trainableProblems(manifest)
        out += referenceProblems(manifest)
        return out
    }

    private static func listOfObjects(_ manifest: JSONObject, _ key: String, _ keys: [String]) -> [String] {
        guard let entries = manifest[key]?.array else { return [] } // reported with the top-level types
        return entries.enumerated().flatMap { i, e in missing(e, keys, "\(key)[\(i)]", types: key) }
    }

    private static func methodsProblems(_ manifest: JSONObject) -> [String] {
        guard let format = manifest[Contract.Key.format]?.string, let methods = manifest[Contract.Key.methods]?.object,
              let required = Contract.methodKeys[format] else { return [] }
        var out = missing(.object(methods), required, Contract.Key.methods)
        if format == Contract.formatPte {
            for (key, keys) in [(Contract.MethodKey.train, Contract.pteTrainMethodKeys), (Contract.MethodKey.eval, Contract.pteEvalMethodKeys)]
            where methods[key]?.object != nil {
                out += missing(methods[key], keys, "\(Contract.Key.methods).\(key)", types: pteMethod)
            }
        }
        return out
    }

    /// The optional `memory_bound` section: its keys and types, and a total that is the sum of its terms.
    private static func memoryBoundProblems(_ manifest: JSONObject) -> [String] {
        let key = Contract.Key.memoryBound
        guard let section = manifest[key]?.object else { return [] } // absent, or reported with the top-level types
        let out = missing(.object(section), Contract.memoryBoundKeys, key)
        if !out.isEmpty { return out }
        let terms = [
            Contract.MemoryBoundKey.backboneBytes, Contract.MemoryBoundKey.trainableBytes, Contract.MemoryBoundKey.gradientBytes,
            Contract.MemoryBoundKey.optimizerStateBytes, Contract.MemoryBoundKey.activationBytes,
        ]
        let total = terms.reduce(0) { $0 + section[$1]!.int! }
        if !Py.equal(section[Contract.MemoryBoundKey.totalBytes], .int(total)) {
            return ["\(key).\(Contract.MemoryBoundKey.totalBytes) is \(Py.str(section[Contract.MemoryBoundKey.totalBytes])); expected the sum of its terms, \(total)"]
        }
        return []
    }

    private static func trainableProblems(_ manifest: JSONObject) -> [String] {
        let entries = manifest[Contract.Key.trainable]!.array!
        var out: [String] = []
        let roles = Contract.roles.map { JSON.string($0) }
        for (i, e) in entries.enumerated() {
            if let o = e.object, o.contains(Contract.TrainableKey.role), !roles.contains(o[Contract.TrainableKey.role]!) {
                out.append("\(Contract.Key.trainable)[\(i)].\(Contract.TrainableKey.role) is \(Py.repr(o[Contract.TrainableKey.role])); expected one of \(Py.repr(Contract.roles))")
            }
        }
        // (module, slot) -> roles, in first-seen order; keys compared as JSON (they may be any value).
        var pairKeys: [(JSON?, JSON?)] = []
        var pairRoles: [[JSON?]] = []
        for e in entries {
            guard let o = e.object else { continue }
            let key = (o[Contract.TrainableKey.module], o[Contract.TrainableKey.slot])
            if let at = pairKeys.firstIndex(where: { $0.0 == key.0 && $0.1 == key.1 }) {
                pairRoles[at].append(o[Contract.TrainableKey.role])
            } else {
                pairKeys.append(key)
                pairRoles.append([o[Contract.TrainableKey.role]])
            }
        }
        let modules = manifest[Contract.Key.rankSchedule]?[Contract.ScheduleKey.modules]?.object
        for (i, e) in entries.enumerated() {
            guard let o = e.object, let modules else { continue }
            let info = slotInfo(o, modules)
            let shape = o[Contract.TrainableKey.shape]
            let role = o[Contract.TrainableKey.role]
            let rMax = info?[Contract.SlotKey.rMax]
            let name = Py.str(o[Contract.TrainableKey.name])
            if info == nil {
                out.append("\(Contract.Key.trainable)[\(i)] (\(name)) belongs to no slot of the rank schedule")
            } else if !(shape?.array.map { $0.count == 2 && $0.allSatisfy { ($0.int ?? -1) >= 0 } } ?? false) {
                out.append("\(Contract.Key.trainable)[\(i)].\(Contract.TrainableKey.shape) is \(Py.repr(shape)); expected two sizes")
            } else if let r = role, roles.contains(r), !Py.equal(shape![r == .string(Contract.roleDown) ? 0 : 1], rMax) {
                out.append("\(Contract.Key.trainable)[\(i)] (\(name), \(Py.str(role))) has shape \(Py.str(shape)); " +
                    "its rank dimension must be the slot's r_max \(Py.str(rMax))")
            }
            if !trainableDtypes.contains(where: { o[Contract.TrainableKey.dtype] == .string($0) }) {
                out.append("\(Contract.Key.trainable)[\(i)].\(Contract.TrainableKey.dtype) is \(Py.repr(o[Contract.TrainableKey.dtype])); expected one of \(Py.repr(trainableDtypes))")
            }
        }
        for (key, found) in zip(pairKeys, pairRoles) {
            if !found.contains(where: { $0 == nil || $0 == .null }) && Py.sorted(found.map { Py.str($0) }) != Py.sorted(Contract.roles) {
                out.append("\(Contract.Key.trainable): \(Py.str(key.0)).\(Py.str(key.1)) has roles \(Py.repr(.array(found.map { $0 ?? .null }))); " +
                    "expected one \(Py.repr(Contract.roleDown)) and one \(Py.repr(Contract.roleUp))")
            }
        }
        return out
    }

    /// The schedule's entry for a trainable tensor's module and slot, when both are strings it has.
    private static func slotInfo(_ o: JSONObject, _ modules: JSONObject) -> JSONObject? {
        guard let module = o[Contract.TrainableKey.module]?.string, let slot = o[Contract.TrainableKey.slot]?.string else { return nil }
        return modules[module]?[Contract.ScheduleKey.slots]?[slot]?.object
    }

    private static func scheduleProblems(_ manifest: JSONObject) -> [String] {
        let key = Contract.Key.rankSchedule
        let section = manifest[key]!
        var out = missing(section, Contract.bundleRankScheduleKeys, key)
        for (module, entry) in section[Contract.ScheduleKey.modules]?.object ?? JSONObject() {
            guard let slots = entry[Contract.ScheduleKey.slots]?.object else {
                out.append("\(key).\(Contract.ScheduleKey.modules)[\(Py.repr(module))] has no slots object")
                continue
            }
            for (slot, info) in slots {
                out += missing(info, Contract.slotKeys, "\(key).\(Contract.ScheduleKey.modules)[\(Py.repr(module))].\(Contract.ScheduleKey.slots)[\(Py.repr(slot))]")
            }
        }
        if !out.isEmpty { return out }
        do {
            _ = try RankSchedule.read(section, where: key)
            return []
        } catch let e as ConfigError {
            return [e.message]
        } catch {
            return [errorMessage(error)]
        }
    }

    /// Every file the manifest names must be one it checksums (so nothing unverified is opened).
    private static func referenceProblems(_ manifest: JSONObject) -> [String] {
        let listed = manifest[Contract.Key.files]!.array!.map { $0[Contract.FileKey.path] }
        let methods = manifest[Contract.Key.methods]!.object!
        let named = [manifest[Contract.Key.inputSpec]?[Contract.InputSpecKey.tokenizerFile]] +
            pathMethods.filter { methods.contains($0) }.map { methods[$0] }
        return named.filter { n in !listed.contains { $0 == n } }.map { "\(Py.repr($0)) is used by the manifest but not listed (with its sha256) in files" }
    }
}
