/// An insertion-ordered dictionary (Kotlin's `LinkedHashMap`), where the SDK's results depend on
/// order: schedule modules and units (the allocation search breaks ties by unit order), a
/// decision's changed units. Equality ignores order, as Kotlin's and Python's maps do.
public struct OrderedDict<Value>: Sequence {
    public private(set) var keys: [String] = []
    private var storage: [String: Value] = [:]

    public init() {}
    public init(_ pairs: [(String, Value)]) { for (k, v) in pairs { self[k] = v } }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }
    public var values: [Value] { keys.map { storage[$0]! } }
    public func contains(_ key: String) -> Bool { storage[key] != nil }

    public subscript(key: String) -> Value? {
        get { storage[key] }
        set {
            if let v = newValue {
                if storage[key] == nil { keys.append(key) }
                storage[key] = v
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// The value of `key`, or `fallback` (assigning through it inserts, as `getOrPut`).
    public subscript(key: String, default fallback: @autoclosure () -> Value) -> Value {
        get { self[key] ?? fallback() }
        set { self[key] = newValue }
    }

    public var pairs: [(key: String, value: Value)] { keys.map { ($0, storage[$0]!) } }
    public func makeIterator() -> IndexingIterator<[(key: String, value: Value)]> { pairs.makeIterator() }
    public func mapValues<T>(_ f: (Value) throws -> T) rethrows -> OrderedDict<T> {
        OrderedDict<T>(try pairs.map { ($0.key, try f($0.value)) })
    }
    /// As a plain dictionary (order dropped).
    public var dictionary: [String: Value] { storage }
}

extension OrderedDict: Equatable where Value: Equatable {
    public static func == (a: OrderedDict, b: OrderedDict) -> Bool { a.storage == b.storage }
}
