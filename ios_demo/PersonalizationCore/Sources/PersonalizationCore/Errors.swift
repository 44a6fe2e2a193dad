import Foundation

/// Every error the core raises on purpose conforms to this (mobile_peft/core/errors.py
/// `MobilePeftError`). Messages say what was given, what was expected and what to do about it.
public protocol MobilePeftError: Error, CustomStringConvertible, LocalizedError {
    var message: String { get }
}

extension MobilePeftError {
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// A configuration value that cannot work (Python: `ConfigError`).
public struct ConfigError: MobilePeftError {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A data set or a data file (annotations, tokenizer.json, an image) is malformed (Python: `DataError`).
/// `JsonError` and `UnsupportedTokenizerError` are data errors too: catch `DataErrorKind` for all three.
public protocol DataErrorKind: MobilePeftError {}

public struct DataError: DataErrorKind {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A tokenizer.json whose model, normalizer or pre-tokenizer this core does not implement.
public struct UnsupportedTokenizerError: DataErrorKind {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A checkpoint or adapter directory is missing files or unreadable (Python: `CheckpointError`).
public struct CheckpointError: MobilePeftError {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A bundle or its manifest fails validation; `problems` lists every problem, not only the first
/// (Python: `BundleError`, same message layout).
public struct BundleError: MobilePeftError {
    public let source: String
    public let problems: [String]
    public init(_ source: String, _ problems: [String]) {
        self.source = source
        self.problems = problems
    }
    public var message: String { "bundle \(source) is invalid:\n  - " + problems.joined(separator: "\n  - ") }
}

/// Training produced non-finite losses, gradients or weights too often to go on (Python: `DivergedError`).
public struct DivergedError: MobilePeftError {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A call a runtime does not support (Kotlin: `UnsupportedOperationException`).
public struct UnsupportedError: MobilePeftError {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// The message of any error, the core's own or a platform one (`"\(type): \(text)"` for the latter).
public func errorMessage(_ error: Error) -> String {
    if let e = error as? MobilePeftError { return e.message }
    return "\(type(of: error)): \((error as? CustomStringConvertible)?.description ?? error.localizedDescription)"
}
