import Foundation

/// How raw (image, question, answer) triples become model inputs (mobile_peft/core/spec.py): the
/// model's `InputSpec` and what the export fixed (`BundleInputSpec`: batch size, sequence length,
/// special token ids, tokenizer file). Sequence layout, fixed:
///
///     [ image tokens | <bos> prompt-with-question answer <eos> <pad> ... ]   (text: max_text_len)
///
/// `labels` is `Contract.ignoreIndex` everywhere except the answer tokens and the closing `<eos>`.
/// The SDK's defaults (mobile_peft/core/spec.py InputSpec); tests/demo_apps checks them.
public enum SpecDefaults {
    public static let padToken = "<pad>"
    public static let bosToken = "<bos>"
    public static let eosToken = "<eos>"
    public static let questionPlaceholder = "{question}"
    public static let defaultPromptTemplate = "question : {question} answer :"
}

public struct InputSpec: Equatable {
    public var imageSize: Int
    public var imageMean: [Double]
    public var imageStd: [Double]
    public var promptTemplate: String = SpecDefaults.defaultPromptTemplate
    public var maxTextLen: Int = 24
    public var padToken: String = SpecDefaults.padToken
    public var bosToken: String = SpecDefaults.bosToken
    public var eosToken: String = SpecDefaults.eosToken
    public var lowercase: Bool = true

    public init(imageSize: Int, imageMean: [Double], imageStd: [Double], promptTemplate: String = SpecDefaults.defaultPromptTemplate,
                maxTextLen: Int = 24, padToken: String = SpecDefaults.padToken, bosToken: String = SpecDefaults.bosToken,
                eosToken: String = SpecDefaults.eosToken, lowercase: Bool = true) {
        self.imageSize = imageSize
        self.imageMean = imageMean
        self.imageStd = imageStd
        self.promptTemplate = promptTemplate
        self.maxTextLen = maxTextLen
        self.padToken = padToken
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.lowercase = lowercase
    }

    /// `InputSpec.__post_init__`'s checks, with its messages.
    public func problems() -> [String] {
        var out: [String] = []
        if !promptTemplate.contains(SpecDefaults.questionPlaceholder) {
            out.append("prompt_template=\(Py.repr(promptTemplate)) has no '\(SpecDefaults.questionPlaceholder)' placeholder; add one.")
        }
        if imageSize <= 0 || maxTextLen <= 2 {
            out.append("image_size=\(imageSize) and max_text_len=\(maxTextLen) must be positive " +
                "(max_text_len > 2 leaves room for <bos> and <eos>).")
        }
        if imageMean.count != 3 || imageStd.count != 3 { out.append("image_mean and image_std need 3 values (RGB).") }
        return out
    }
}

/// The label value that carries no loss, public for callers' default arguments (the contract's).
public let labelIgnoreIndex: Int = Contract.ignoreIndex

/// `input_spec.token_ids`.
public struct TokenIds: Equatable {
    public let pad: Int
    public let bos: Int
    public let eos: Int
    public let ignoreIndex: Int
    public init(pad: Int, bos: Int, eos: Int, ignoreIndex: Int = labelIgnoreIndex) {
        self.pad = pad
        self.bos = bos
        self.eos = eos
        self.ignoreIndex = ignoreIndex
    }
}

/// A manifest's `input_spec`: the model's spec and what the export fixed.
public struct BundleInputSpec: Equatable {
    public let spec: InputSpec
    public let batchSize: Int
    public let sequenceLength: Int
    public let tokenIds: TokenIds
    public let tokenizerFile: String

    /// The typed spec of an `input_spec` that `manifestProblems` found sound (every type checked there).
    static func read(_ d: JSONObject) -> BundleInputSpec {
        let t = d[Contract.InputSpecKey.tokenIds]!.object!
        func id(_ k: String) -> Int { t[k]!.int! }
        func token(_ k: String, _ fallback: String) -> String { d[k]?.string ?? fallback }
        let spec = InputSpec(
            imageSize: d[Contract.InputSpecKey.imageSize]!.int!,
            imageMean: d[Contract.InputSpecKey.imageMean]!.array!.map { $0.number! },
            imageStd: d[Contract.InputSpecKey.imageStd]!.array!.map { $0.number! },
            promptTemplate: d[Contract.InputSpecKey.promptTemplate]!.string!,
            maxTextLen: d[Contract.InputSpecKey.maxTextLen]!.int!,
            padToken: token(Contract.InputSpecKey.padToken, SpecDefaults.padToken),
            bosToken: token(Contract.InputSpecKey.bosToken, SpecDefaults.bosToken),
            eosToken: token(Contract.InputSpecKey.eosToken, SpecDefaults.eosToken),
            lowercase: d[Contract.InputSpecKey.lowercase]!.bool!
        )
        let ids = TokenIds(pad: id(Contract.TokenIdKey.pad), bos: id(Contract.TokenIdKey.bos), eos: id(Contract.TokenIdKey.eos),
                           ignoreIndex: id(Contract.TokenIdKey.ignoreIndex))
        return BundleInputSpec(spec: spec, batchSize: d[Contract.InputSpecKey.batchSize]!.int!,
                               sequenceLength: d[Contract.InputSpecKey.sequenceLength]!.int!, tokenIds: ids,
                               tokenizerFile: d[Contract.InputSpecKey.tokenizerFile]!.string!)
    }
}
