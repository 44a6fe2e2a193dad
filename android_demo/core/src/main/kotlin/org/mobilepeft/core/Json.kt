package org.mobilepeft.core

import java.io.File

/** A JSON text that Python's `json.loads` would also refuse; [message] and [column] are Python's. */
class JsonError(val reason: String, val line: Int, val column: Int, val position: Int) :
    DataError("$reason: line $line column $column (char $position)")

/**
 * JSON as Python's `json` module reads and writes it, so the phone parses a manifest, a
 * tokenizer.json or an annotations line exactly as the SDK does, and writes files byte for byte
 * as the SDK does.
 *
 * Values: `Map<String, Any?>` (insertion-ordered; a repeated key keeps its first position and
 * its last value), `List<Any?>`, `String`, `Long` (a number without fraction or exponent),
 * `Double`, `Boolean`, `null`.
 *
 * Reading is strict RFC 8259 plus what Python accepts beyond it: `NaN`, `Infinity` and
 * `-Infinity` (the SDK's `json.dumps` writes them, e.g. a performance model's `nan` Spearman).
 * Errors carry Python's message and position ("Expecting ',' delimiter", column 1-based).
 * Not mirrored: integers beyond 64 bits (Python reads any size; here they are an error).
 *
 * Why not `org.json`: Android's parser is lenient (comments, single quotes, unquoted names) where
 * Python's is not, and its writer cannot reproduce Python's float repr or separators, which the
 * byte-identical adapter files need.
 */
object Json {
    fun parse(text: String): Any? = Parser(text).document()

    /** The [JsonError.reason] of a document nested deeper than [MAX_DEPTH] (Python: a RecursionError). */
    const val TOO_DEEP = "nested too deeply"
    const val MAX_DEPTH = 900

    fun parseFile(file: File): Any? = parse(file.readText(Charsets.UTF_8))

    /**
     * Python's `json.dumps(value, indent=indent, separators=..., sort_keys=sortKeys)` with
     * `ensure_ascii=True`: [itemSeparator] defaults to ", " (or "," when [indent] is set).
     */
    fun dumps(
        value: Any?,
        indent: Int? = null,
        itemSeparator: String = if (indent == null) ", " else ",",
        keySeparator: String = ": ",
        sortKeys: Boolean = false,
    ): String {
        val out = StringBuilder()
        Writer(out, indent, itemSeparator, keySeparator, sortKeys).write(value, 0)
        return out.toString()
    }

    private const val WHITESPACE = " \t\n\r"

    private class Parser(private val s: String) {
        private var i = 0
        private var depth = 0

        fun document(): Any? {
            skipWhitespace()
            val value = value()
            skipWhitespace()
            if (i != s.length) fail("Extra data", i)
            return value
        }

        private fun fail(reason: String, at: Int): Nothing {
            val line = s.substring(0, at).count { it == '\n' } + 1
            val column = at - s.lastIndexOf('\n', at - 1) // Python: pos - doc.rfind("\n", 0, pos)
            throw JsonError(reason, line, column, at)
        }

        private fun skipWhitespace() {
            while (i < s.length && s[i] in WHITESPACE) i++
        }

        private fun literal(word: String, value: Any?): Any? {
            if (!s.startsWith(word, i)) fail("Expecting value", i)
            i += word.length
            return value
        }

        private fun value(): Any? {
            if (i >= s.length) fail("Expecting value", i)
            return when (s[i]) {
                '"' -> string()
                '{' -> obj()
                '[' -> array()
                'n' -> literal("null", null)
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'N' -> literal("NaN", Double.NaN)
                'I' -> literal("Infinity", Double.POSITIVE_INFINITY)
                '-' -> if (s.startsWith("-Infinity", i)) literal("-Infinity", Double.NEGATIVE_INFINITY) else number()
                else -> number()
            }
        }

        private fun digits(): Int {
            val start = i
            while (i < s.length && s[i] in '0'..'9') i++
            return i - start
        }

        private fun number(): Any {
            val start = i
            if (s[i] == '-') i++
            when {
                i < s.length && s[i] in '1'..'9' -> digits()
                i < s.length && s[i] == '0' -> i++
                else -> fail("Expecting value", start)
            }
            var isFloat = false
            if (i + 1 < s.length && s[i] == '.' && s[i + 1] in '0'..'9') {
                i++
                digits()
                isFloat = true
            }
            if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
                val mark = i
                i++
                if (i < s.length && (s[i] == '+' || s[i] == '-')) i++
                if (digits() > 0) isFloat = true else i = mark
            }
            val text = s.substring(start, i)
            if (isFloat) return text.toDouble()
            return text.toLongOrNull() ?: fail("Integer too large for this reader (64-bit)", start)
        }

        private fun string(): String {
            val begin = i
            i++
            val out = StringBuilder()
            while (true) {
                if (i >= s.length) fail("Unterminated string starting at", begin)
                val c = s[i]
                when {
                    c == '"' -> { i++; return out.toString() }
                    c == '\\' -> escape(out, begin)
                    c < ' ' -> fail("Invalid control character at", i)
                    else -> { out.append(c); i++ }
                }
            }
        }

        private fun hex4(at: Int): Int? {
            if (at + 4 > s.length) return null
            val text = s.substring(at, at + 4)
            return if (text.all { it in '0'..'9' || it in 'a'..'f' || it in 'A'..'F' }) text.toInt(16) else null
        }

        private fun escape(out: StringBuilder, begin: Int) {
            if (i + 1 >= s.length) fail("Unterminated string starting at", begin)
            when (val e = s[i + 1]) {
                '"', '\\', '/' -> out.append(e)
                'b' -> out.append('\b')
                'f' -> out.append('\u000c')
                'n' -> out.append('\n')
                'r' -> out.append('\r')
                't' -> out.append('\t')
                'u' -> {
                    var code = hex4(i + 2) ?: fail("Invalid \\uXXXX escape", i + 1)
                    i += 6
                    // A high surrogate followed by an escaped low one is one character (as Python).
                    if (code in 0xD800..0xDBFF && s.startsWith("\\u", i)) {
                        val low = hex4(i + 2)
                        if (low != null && low in 0xDC00..0xDFFF) {
                            out.appendCodePoint(0x10000 + ((code - 0xD800) shl 10) + (low - 0xDC00))
                            i += 6
                            return
                        }
                    }
                    out.append(code.toChar())
                    return
                }
                else -> fail("Invalid \\escape", i)
            }
            i += 2
        }

        private fun nest() {
            if (++depth > MAX_DEPTH) fail(TOO_DEEP, i)
        }

        private fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            nest()
            i++
            skipWhitespace()
            if (i < s.length && s[i] == '}') { i++; depth--; return out }
            while (true) {
                if (i >= s.length || s[i] != '"') fail("Expecting property name enclosed in double quotes", i)
                val key = string()
                skipWhitespace()
                if (i >= s.length || s[i] != ':') fail("Expecting ':' delimiter", i)
                i++
                skipWhitespace()
                out[key] = value()
                skipWhitespace()
                if (i < s.length && s[i] == '}') { i++; depth--; return out }
                if (i >= s.length || s[i] != ',') fail("Expecting ',' delimiter", i)
                i++
                skipWhitespace()
            }
        }

        private fun array(): List<Any?> {
            val out = ArrayList<Any?>()
            nest()
            i++
            skipWhitespace()
            if (i < s.length && s[i] == ']') { i++; depth--; return out }
            while (true) {
                out += value()
                skipWhitespace()
                if (i < s.length && s[i] == ']') { i++; depth--; return out }
                if (i >= s.length || s[i] != ',') fail("Expecting ',' delimiter", i)
                i++
                skipWhitespace()
            }
        }
    }

    private class Writer(
        private val out: StringBuilder,
        private val indent: Int?,
        private val itemSeparator: String,
        private val keySeparator: String,
        private val sortKeys: Boolean,
    ) {
        private fun newline(level: Int) {
            if (indent != null) out.append('\n').append(" ".repeat(indent * level))
        }

        fun write(value: Any?, level: Int) {
            when (value) {
                null -> out.append("null")
                is Boolean -> out.append(if (value) "true" else "false")
                is String -> string(value)
                is Int, is Long, is Short, is Byte, is java.math.BigInteger -> out.append(value.toString())
                is Double -> out.append(Py.jsonFloat(value))
                is Float -> out.append(Py.jsonFloat(value.toDouble()))
                is Map<*, *> -> {
                    val entries = value.entries.map { (k, v) -> (k as? String ?: error("JSON keys must be strings, got $k")) to v }
                    items(if (sortKeys) entries.sortedWith { a, b -> Py.compare(a.first, b.first) } else entries, "{", "}", level) { (k, v) ->
                        string(k)
                        out.append(keySeparator)
                        write(v, level + 1)
                    }
                }
                is List<*> -> items(value, "[", "]", level) { write(it, level + 1) }
                is FloatArray -> write(value.toList(), level)
                is DoubleArray -> write(value.toList(), level)
                is IntArray -> write(value.toList(), level)
                is LongArray -> write(value.toList(), level)
                else -> throw IllegalArgumentException("cannot write ${value::class.java.name} as JSON")
            }
        }

        private fun <T> items(values: List<T>, open: String, close: String, level: Int, each: (T) -> Unit) {
            out.append(open)
            if (values.isEmpty()) { out.append(close); return }
            values.forEachIndexed { n, v ->
                if (n > 0) out.append(itemSeparator)
                newline(level + 1)
                each(v)
            }
            newline(level)
            out.append(close)
        }

        // ensure_ascii=True: everything outside ' '..'~' is escaped; astral characters as a pair.
        private fun string(s: String) {
            out.append('"')
            for (c in s) {
                when (c) {
                    '"' -> out.append("\\\"")
                    '\\' -> out.append("\\\\")
                    '\n' -> out.append("\\n")
                    '\r' -> out.append("\\r")
                    '\t' -> out.append("\\t")
                    '\b' -> out.append("\\b")
                    '\u000c' -> out.append("\\f")
                    else -> if (c in ' '..'~') out.append(c) else out.append("\\u").append(Integer.toHexString(c.code).padStart(4, '0'))
                }
            }
            out.append('"')
        }
    }
}
