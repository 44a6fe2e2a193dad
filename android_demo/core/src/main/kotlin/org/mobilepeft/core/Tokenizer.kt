package org.mobilepeft.core

import java.io.File

/**
 * A Hugging Face `tokenizer.json` with a `WordLevel` model, applied as the `tokenizers` library
 * applies the SDK's word tokenizer (mobile_peft/data/tokenizer.py) with
 * `encode(text, add_special_tokens=False)`:
 *
 *  1. added tokens (`added_tokens`, matched verbatim, leftmost-longest) are split out first;
 *  2. the normalizer: `Lowercase` (each character's full lower-case mapping, as Rust's
 *     `char::to_lowercase`), or none;
 *  3. the pre-tokenizers, in order: `Whitespace` (pieces `\w+` or `[^\w\s]+`, Unicode classes as
 *     Rust's regex crate: `\w` = Alphabetic, marks, decimal digits, connector punctuation, join
 *     controls; `\s` = White_Space) and `Punctuation` with behaviour `Isolated` (every ASCII
 *     punctuation character and every character of Unicode category P* becomes its own piece);
 *  4. each piece's vocabulary id, unknown pieces the `unk_token`'s.
 *
 * Any other model, normalizer, pre-tokenizer, post-processor or added-token option is refused
 * with an [UnsupportedTokenizerError] rather than approximated. Character classes come from the
 * platform's Unicode tables (Java 17: Unicode 13; Rust's regex: 15), which differ only for
 * characters assigned since.
 */
class WordLevelTokenizer private constructor(
    private val vocab: Map<String, Int>,
    private val unkId: Int,
    private val lowercase: Boolean,
    private val steps: List<String>,
    private val added: List<Pair<String, Int>>,
    private val special: Set<Int>,
) {
    private val byId: Map<Int, String> = vocab.entries.associate { (k, v) -> v to k } + added.associate { (t, id) -> id to t }

    /** `token_to_id`: the id of [token] (added tokens first), or null. */
    fun tokenToId(token: String): Int? = added.firstOrNull { it.first == token }?.second ?: vocab[token]

    /** `encode(text, add_special_tokens=False).ids`. */
    fun encode(text: String): IntArray = pieces(text).map { (piece, id) -> id ?: vocab[piece] ?: unkId }.toIntArray()

    /** The pieces of [text] after step 3 (an added token's id where one matched), for tests. */
    fun pieces(text: String): List<Pair<String, Int?>> {
        val out = ArrayList<Pair<String, Int?>>()
        for ((segment, id) in splitAdded(text)) {
            if (id != null) {
                out += segment to id
                continue
            }
            var pieces = listOf(if (lowercase) lower(segment) else segment)
            for (step in steps) pieces = pieces.flatMap(if (step == WHITESPACE) ::whitespace else ::isolatePunctuation)
            pieces.forEach { out += it to null }
        }
        return out
    }

    /** `decode(ids)` (special tokens skipped; no decoder: tokens joined with one space). */
    fun decode(ids: List<Int>): String = ids.filterNot { it in special }.mapNotNull { byId[it] }.joinToString(" ")

    private fun splitAdded(text: String): List<Pair<String, Int?>> {
        if (added.isEmpty()) return listOf(text to null)
        val parts = ArrayList<Pair<String, Int?>>()
        var i = 0
        var start = 0
        while (i < text.length) {
            val hit = added.firstOrNull { text.startsWith(it.first, i) } // longest first
            if (hit == null) {
                i++
                continue
            }
            if (i > start) parts += text.substring(start, i) to null
            parts += hit.first to hit.second
            i += hit.first.length
            start = i
        }
        if (start < text.length) parts += text.substring(start) to null
        return parts
    }

    companion object {
        const val WORD_LEVEL = "WordLevel"
        const val LOWERCASE = "Lowercase"
        const val WHITESPACE = "Whitespace"
        const val PUNCTUATION = "Punctuation"
        const val SEQUENCE = "Sequence"
        private const val ISOLATED = "Isolated"
        private const val TYPE = "type"
        private const val ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

        fun load(file: File): WordLevelTokenizer = fromJson(Json.parseFile(file), file.name)

        fun fromJson(root: Any?, source: String = Contract.TOKENIZER_FILE): WordLevelTokenizer {
            fun refuse(what: String): Nothing = throw UnsupportedTokenizerError(
                "$source: $what; this app implements the WordLevel model with the Lowercase normalizer and the " +
                    "Whitespace + Punctuation pre-tokenizers (the SDK's word tokenizer). Export with that tokenizer, " +
                    "or add the tokenizer type to org.mobilepeft.core.WordLevelTokenizer.",
            )
            val r = root as? Map<*, *> ?: throw DataError("$source holds a ${Py.typeName(root)}, not a tokenizer object")
            val model = r["model"] as? Map<*, *> ?: refuse("it has no model object")
            if (model[TYPE] != WORD_LEVEL) refuse("its model type is ${Py.repr(model[TYPE])}")
            val vocab = (model["vocab"] as? Map<*, *> ?: refuse("its WordLevel model has no vocab object"))
                .entries.associate { (k, v) -> k.toString() to ((v as? Long)?.toInt() ?: refuse("vocab entry ${Py.repr(k)} has id ${Py.repr(v)}")) }
            val unk = model["unk_token"] as? String ?: refuse("its WordLevel model has no unk_token")
            val unkId = vocab[unk] ?: throw DataError("$source: unk_token ${Py.repr(unk)} is not in the vocabulary.")

            val normalizers = types(r["normalizer"], "normalizers", ::refuse)
            normalizers.filter { it[TYPE] != LOWERCASE }.forEach { refuse("its normalizer ${Py.repr(it[TYPE])} is not supported") }
            val pre = types(r["pre_tokenizer"], "pretokenizers", ::refuse)
            for (p in pre) {
                when (p[TYPE]) {
                    WHITESPACE -> Unit
                    PUNCTUATION -> if ((p["behavior"] ?: ISOLATED) != ISOLATED) refuse("its Punctuation behavior is ${Py.repr(p["behavior"])}")
                    else -> refuse("its pre-tokenizer ${Py.repr(p[TYPE])} is not supported")
                }
            }
            if (r["post_processor"] != null) refuse("it has a post_processor (${Py.repr((r["post_processor"] as? Map<*, *>)?.get(TYPE))})")

            val added = ArrayList<Pair<String, Int>>()
            val special = HashSet<Int>()
            for (t in r["added_tokens"] as? List<*> ?: emptyList<Any?>()) {
                val o = t as? Map<*, *> ?: refuse("an added token is not an object")
                val content = o["content"] as? String ?: refuse("an added token has no content")
                val id = (o["id"] as? Long)?.toInt() ?: refuse("added token ${Py.repr(content)} has no id")
                for (flag in listOf("single_word", "lstrip", "rstrip", "normalized")) {
                    if (o[flag] == true) refuse("added token ${Py.repr(content)} sets $flag")
                }
                added += content to id
                if (o["special"] == true) special += id
            }
            added.sortByDescending { it.first.length }
            return WordLevelTokenizer(vocab, unkId, normalizers.isNotEmpty(), pre.map { it[TYPE] as String }, added, special)
        }

        /** The steps of a normalizer / pre-tokenizer node: itself, or the members of a Sequence. */
        private fun types(node: Any?, members: String, refuse: (String) -> Nothing): List<Map<*, *>> = when {
            node == null -> emptyList()
            node !is Map<*, *> -> refuse("a normalizer or pre-tokenizer is a ${Py.typeName(node)}")
            node[TYPE] == SEQUENCE -> (node[members] as? List<*> ?: refuse("a Sequence has no $members")).flatMap { types(it, members, refuse) }
            else -> listOf(node)
        }

        /** Rust `char::to_lowercase` on each character (no context rules, unlike `String.lowercase`). */
        fun lower(s: String): String {
            val out = StringBuilder(s.length)
            var i = 0
            while (i < s.length) {
                val cp = s.codePointAt(i)
                i += Character.charCount(cp)
                out.append(String(Character.toChars(cp)).lowercase())
            }
            return out.toString()
        }

        private fun isWord(cp: Int): Boolean = Character.isAlphabetic(cp) || cp == 0x200C || cp == 0x200D ||
            when (Character.getType(cp).toByte()) {
                Character.NON_SPACING_MARK, Character.ENCLOSING_MARK, Character.COMBINING_SPACING_MARK,
                Character.DECIMAL_DIGIT_NUMBER, Character.CONNECTOR_PUNCTUATION -> true
                else -> false
            }

        /** The Unicode White_Space property (Java's `isWhitespace` differs: it has no U+00A0, U+0085). */
        private fun isSpace(cp: Int): Boolean = cp in 0x09..0x0D || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
            cp in 0x2000..0x200A || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000

        private fun isPunctuation(cp: Int): Boolean {
            if (cp < 128) return cp.toChar() in ASCII_PUNCTUATION
            return when (Character.getType(cp).toByte()) {
                Character.CONNECTOR_PUNCTUATION, Character.DASH_PUNCTUATION, Character.START_PUNCTUATION,
                Character.END_PUNCTUATION, Character.INITIAL_QUOTE_PUNCTUATION, Character.FINAL_QUOTE_PUNCTUATION,
                Character.OTHER_PUNCTUATION -> true
                else -> false
            }
        }

        /** `\w+|[^\w\s]+`, leftmost first; whitespace is dropped. */
        private fun whitespace(s: String): List<String> {
            val out = ArrayList<String>()
            var i = 0
            while (i < s.length) {
                val cp = s.codePointAt(i)
                if (isSpace(cp)) {
                    i += Character.charCount(cp)
                    continue
                }
                val word = isWord(cp)
                val start = i
                while (i < s.length) {
                    val c = s.codePointAt(i)
                    if (isSpace(c) || isWord(c) != word) break
                    i += Character.charCount(c)
                }
                out += s.substring(start, i)
            }
            return out
        }

        private fun isolatePunctuation(piece: String): List<String> {
            val out = ArrayList<String>()
            val run = StringBuilder()
            var i = 0
            while (i < piece.length) {
                val cp = piece.codePointAt(i)
                i += Character.charCount(cp)
                if (isPunctuation(cp)) {
                    if (run.isNotEmpty()) { out += run.toString(); run.setLength(0) }
                    out += String(Character.toChars(cp))
                } else {
                    run.appendCodePoint(cp)
                }
            }
            if (run.isNotEmpty()) out += run.toString()
            return out
        }
    }
}
