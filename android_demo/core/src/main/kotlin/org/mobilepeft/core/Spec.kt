package org.mobilepeft.core

/**
 * How raw (image, question, answer) triples become model inputs (mobile_peft/core/spec.py): the
 * model's [InputSpec] and what the export fixed ([BundleInputSpec]: batch size, sequence length,
 * special token ids, tokenizer file). Sequence layout, fixed:
 *
 *     [ image tokens | <bos> prompt-with-question answer <eos> <pad> ... ]   (text: max_text_len)
 *
 * `labels` is [Contract.IGNORE_INDEX] everywhere except the answer tokens and the closing `<eos>`.
 */
data class InputSpec(
    val imageSize: Int,
    val imageMean: DoubleArray,
    val imageStd: DoubleArray,
    val promptTemplate: String = DEFAULT_PROMPT_TEMPLATE,
    val maxTextLen: Int = 24,
    val padToken: String = PAD_TOKEN,
    val bosToken: String = BOS_TOKEN,
    val eosToken: String = EOS_TOKEN,
    val lowercase: Boolean = true,
) {
    /** `InputSpec.__post_init__`'s checks, with its messages. */
    fun problems(): List<String> {
        val out = mutableListOf<String>()
        if (QUESTION_PLACEHOLDER !in promptTemplate) {
            out += "prompt_template=${Py.repr(promptTemplate)} has no '$QUESTION_PLACEHOLDER' placeholder; add one."
        }
        if (imageSize <= 0 || maxTextLen <= 2) {
            out += "image_size=$imageSize and max_text_len=$maxTextLen must be positive " +
                "(max_text_len > 2 leaves room for <bos> and <eos>)."
        }
        if (imageMean.size != 3 || imageStd.size != 3) out += "image_mean and image_std need 3 values (RGB)."
        return out
    }

    companion object {
        // The SDK's defaults (mobile_peft/core/spec.py InputSpec); tests/demo_apps checks them.
        const val PAD_TOKEN = "<pad>"
        const val BOS_TOKEN = "<bos>"
        const val EOS_TOKEN = "<eos>"
        const val QUESTION_PLACEHOLDER = "{question}"
        const val DEFAULT_PROMPT_TEMPLATE = "question : {question} answer :"
    }
}

/** `input_spec.token_ids`. */
data class TokenIds(val pad: Int, val bos: Int, val eos: Int, val ignoreIndex: Int = Contract.IGNORE_INDEX)

/** A manifest's `input_spec`: the model's spec and what the export fixed. */
data class BundleInputSpec(
    val spec: InputSpec,
    val batchSize: Int,
    val sequenceLength: Int,
    val tokenIds: TokenIds,
    val tokenizerFile: String,
) {
    companion object {
        /** The typed spec of an `input_spec` that [manifestProblems] found sound (every type checked there). */
        fun read(d: Map<*, *>): BundleInputSpec {
            val t = d[Contract.InputSpecKey.TOKEN_IDS] as Map<*, *>
            fun id(k: String) = (t[k] as Long).toInt()
            fun token(k: String, default: String) = d[k] as? String ?: default
            val spec = InputSpec(
                imageSize = (d[Contract.InputSpecKey.IMAGE_SIZE] as Long).toInt(),
                imageMean = (d[Contract.InputSpecKey.IMAGE_MEAN] as List<*>).map { (it as Number).toDouble() }.toDoubleArray(),
                imageStd = (d[Contract.InputSpecKey.IMAGE_STD] as List<*>).map { (it as Number).toDouble() }.toDoubleArray(),
                promptTemplate = d[Contract.InputSpecKey.PROMPT_TEMPLATE] as String,
                maxTextLen = (d[Contract.InputSpecKey.MAX_TEXT_LEN] as Long).toInt(),
                padToken = token(Contract.InputSpecKey.PAD_TOKEN, InputSpec.PAD_TOKEN),
                bosToken = token(Contract.InputSpecKey.BOS_TOKEN, InputSpec.BOS_TOKEN),
                eosToken = token(Contract.InputSpecKey.EOS_TOKEN, InputSpec.EOS_TOKEN),
                lowercase = d[Contract.InputSpecKey.LOWERCASE] as Boolean,
            )
            val ids = TokenIds(id(Contract.TokenIdKey.PAD), id(Contract.TokenIdKey.BOS), id(Contract.TokenIdKey.EOS), id(Contract.TokenIdKey.IGNORE_INDEX))
            return BundleInputSpec(spec, (d[Contract.InputSpecKey.BATCH_SIZE] as Long).toInt(), (d[Contract.InputSpecKey.SEQUENCE_LENGTH] as Long).toInt(), ids, d[Contract.InputSpecKey.TOKENIZER_FILE] as String)
        }
    }
}
