package org.mobilepeft.core

import java.math.BigDecimal
import java.math.MathContext
import java.math.RoundingMode
import java.util.Locale

/**
 * The few Python behaviours the SDK's outputs depend on, so the phone's messages and files read
 * exactly like the SDK's: `repr()` of JSON values, `float.__repr__` (the shortest decimal that
 * reads back as the same double), the type names in messages, string order, `f"{n:,}"`.
 */
object Py {
    /** Python's `type(v).__name__` for a JSON value. */
    fun typeName(v: Any?): String = when (v) {
        null -> "NoneType"
        is Boolean -> "bool"
        is String -> "str"
        is Int, is Long -> "int"
        is Double, is Float -> "float"
        is List<*> -> "list"
        is Map<*, *> -> "dict"
        else -> v::class.java.simpleName
    }

    /** Python's `repr()` of a JSON value (`'a'`, `3`, `1.5`, `True`, `None`, `['a', 1]`, `{'k': 2}`). */
    fun repr(v: Any?): String = when (v) {
        null -> "None"
        is Boolean -> if (v) "True" else "False"
        is String -> strRepr(v)
        is Int, is Long -> v.toString()
        is Double -> floatRepr(v)
        is Float -> floatRepr(v.toDouble())
        is List<*> -> v.joinToString(", ", "[", "]") { repr(it) }
        is Map<*, *> -> v.entries.joinToString(", ", "{", "}") { (k, x) -> repr(k) + ": " + repr(x) }
        else -> v.toString()
    }

    /** Python's `a == b` for JSON scalars: `1 == 1.0 == True`. */
    fun equal(a: Any?, b: Any?): Boolean {
        val x = numeric(a)
        val y = numeric(b)
        return if (x != null && y != null) x == y else a == b
    }

    private fun numeric(v: Any?): Double? = when (v) {
        is Boolean -> if (v) 1.0 else 0.0
        is Number -> v.toDouble()
        else -> null
    }

    /** What Python's `int(v)` raises for [v] (`TypeError`, `ValueError`); the readers report it. */
    class CastError(message: String) : Exception(message)

    /** Python's `int(v)`: ints and bools as they are, floats truncated, numeric strings parsed. */
    fun toInt(v: Any?): Long = when (v) {
        is Boolean -> if (v) 1L else 0L
        is Long -> v
        is Int -> v.toLong()
        is Double -> if (v.isFinite()) v.toLong() else throw CastError("cannot convert float ${floatRepr(v)} to integer")
        is String -> v.trim().replace("_", "").toLongOrNull() ?: throw CastError("invalid literal for int() with base 10: ${repr(v)}")
        else -> throw CastError("int() argument must be a string or a real number, not '${typeName(v)}'")
    }

    /** Python's `float(v)`. */
    fun toFloat(v: Any?): Double = when (v) {
        is Boolean -> if (v) 1.0 else 0.0
        is Number -> v.toDouble()
        is String -> when (val t = v.trim().lowercase()) {
            "nan", "+nan", "-nan" -> Double.NaN
            "inf", "+inf", "infinity", "+infinity" -> Double.POSITIVE_INFINITY
            "-inf", "-infinity" -> Double.NEGATIVE_INFINITY
            else -> t.toDoubleOrNull() ?: throw CastError("could not convert string to float: ${repr(v)}")
        }
        else -> throw CastError("float() argument must be a string or a real number, not '${typeName(v)}'")
    }

    /** Python's truthiness of a JSON value (`x or default`). */
    fun truthy(v: Any?): Boolean = when (v) {
        null -> false
        is Boolean -> v
        is Number -> v.toDouble() != 0.0
        is String -> v.isNotEmpty()
        is Collection<*> -> v.isNotEmpty()
        is Map<*, *> -> v.isNotEmpty()
        else -> true
    }

    /** Python's `str(v)`: a string as it is, anything else as its repr. */
    fun str(v: Any?): String = v as? String ?: repr(v)

    /** `str(v)[:n]`, counting code points. */
    fun head(v: Any?, n: Int): String {
        val s = str(v)
        return if (s.codePointCount(0, s.length) <= n) s else s.substring(0, s.offsetByCodePoints(0, n))
    }

    /** `f"{n:,}"`. */
    fun grouped(n: Long): String = String.format(Locale.ROOT, "%,d", n)

    /** Python's `str` ordering (by code point; Kotlin's `compareTo` is by UTF-16 unit). */
    fun compare(a: String, b: String): Int {
        var i = 0
        var j = 0
        while (i < a.length && j < b.length) {
            val ca = a.codePointAt(i)
            val cb = b.codePointAt(j)
            if (ca != cb) return ca.compareTo(cb)
            i += Character.charCount(ca)
            j += Character.charCount(cb)
        }
        return (a.length - i).compareTo(b.length - j)
    }

    val STRING_ORDER: Comparator<String> = Comparator { a, b -> compare(a, b) }

    private fun isPrintable(cp: Int): Boolean = when (Character.getType(cp).toByte()) {
        Character.CONTROL, Character.FORMAT, Character.SURROGATE, Character.PRIVATE_USE, Character.UNASSIGNED,
        Character.LINE_SEPARATOR, Character.PARAGRAPH_SEPARATOR -> false
        Character.SPACE_SEPARATOR -> cp == ' '.code
        else -> true
    }

    private fun strRepr(s: String): String {
        val quote = if ('\'' in s && '"' !in s) '"' else '\''
        val out = StringBuilder().append(quote)
        var i = 0
        while (i < s.length) {
            val cp = s.codePointAt(i)
            i += Character.charCount(cp)
            when {
                cp == quote.code || cp == '\\'.code -> out.append('\\').appendCodePoint(cp)
                cp == '\t'.code -> out.append("\\t")
                cp == '\n'.code -> out.append("\\n")
                cp == '\r'.code -> out.append("\\r")
                cp < 0x7f && cp >= 0x20 -> out.appendCodePoint(cp)
                cp < 0x80 || (cp <= 0xff && !isPrintable(cp)) -> out.append("\\x").append(hex(cp, 2))
                isPrintable(cp) -> out.appendCodePoint(cp)
                cp <= 0xffff -> out.append("\\u").append(hex(cp, 4))
                else -> out.append("\\U").append(hex(cp, 8))
            }
        }
        return out.append(quote).toString()
    }

    private fun hex(v: Int, width: Int): String = Integer.toHexString(v).padStart(width, '0')

    /** `json.dumps` of a float: its repr, with `NaN` / `Infinity` / `-Infinity`. */
    fun jsonFloat(x: Double): String = when {
        x.isNaN() -> "NaN"
        x == Double.POSITIVE_INFINITY -> "Infinity"
        x == Double.NEGATIVE_INFINITY -> "-Infinity"
        else -> floatRepr(x)
    }

    /**
     * `float.__repr__`: the shortest digit string that reads back as [x] (of those, the closest
     * to [x]), positional for exponents -4..16, else `d.ddde±XX`.
     */
    fun floatRepr(x: Double): String {
        if (x.isNaN()) return "nan"
        if (x.isInfinite()) return if (x > 0) "inf" else "-inf"
        if (x == 0.0) return if (1.0 / x < 0) "-0.0" else "0.0"
        val (digits, decpt) = shortestDigits(Math.abs(x))
        val sign = if (x < 0) "-" else ""
        val n = digits.length
        if (decpt <= -4 || decpt > 16) {
            val exp = decpt - 1
            val mantissa = if (n == 1) digits else digits[0] + "." + digits.substring(1)
            return sign + mantissa + "e" + (if (exp < 0) "-" else "+") + Math.abs(exp).toString().padStart(2, '0')
        }
        return sign + when {
            decpt <= 0 -> "0." + "0".repeat(-decpt) + digits
            decpt >= n -> digits + "0".repeat(decpt - n) + ".0"
            else -> digits.substring(0, decpt) + "." + digits.substring(decpt)
        }
    }

    /** `(digits, decpt)` with `x = 0.<digits> * 10^decpt`, digits the shortest that round-trip. */
    private fun shortestDigits(x: Double): Pair<String, Int> {
        val exact = BigDecimal(x)
        for (p in 1..17) {
            val nearest = exact.round(MathContext(p, RoundingMode.HALF_EVEN))
            val unit = nearest.ulp()
            // At a power of two the interval that reads back as x is lopsided, so a p-digit
            // neighbour of the nearest p-digit decimal can read back when the nearest does not.
            val found = listOf(nearest, nearest.subtract(unit), nearest.add(unit))
                .filter { it.signum() > 0 && it.stripTrailingZeros().precision() <= p && java.lang.Double.parseDouble(it.toString()) == x }
                .minByOrNull { it.subtract(exact).abs() }
            if (found != null) {
                val d = found.stripTrailingZeros()
                val digits = d.unscaledValue().toString()
                return digits to (digits.length - d.scale())
            }
        }
        error("no round-trip decimal for $x")
    }
}
