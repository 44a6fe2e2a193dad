package org.mobilepeft.core

import java.io.File
import java.nio.file.Files
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail

/**
 * The golden fixtures written by tests/demo_apps/make_fixtures.py from the SDK's own code. Found
 * through the system property `mobilepeft.fixtures` (run_tests.sh and Gradle set it), else at
 * `../../tests/demo_apps/fixtures` from the working directory (android_demo/core).
 */
object Fixtures {
    val dir: File by lazy {
        val candidates = listOfNotNull(
            System.getProperty("mobilepeft.fixtures")?.let(::File),
            File("../../tests/demo_apps/fixtures"),
            File("tests/demo_apps/fixtures"),
        )
        candidates.firstOrNull { File(it, "README.md").isFile }?.canonicalFile
            ?: error("golden fixtures not found (tried ${candidates.map { it.absolutePath }}); set -Dmobilepeft.fixtures=DIR")
    }

    fun file(name: String): File = File(dir, name)

    fun json(name: String): Map<*, *> = Json.parseFile(file(name)) as Map<*, *>

    fun tempDir(prefix: String): File = Files.createTempDirectory(prefix).toFile().also { it.deleteOnExit() }

    fun copyTree(from: File, to: File): File {
        from.copyRecursively(to, overwrite = true)
        return to
    }
}

// -- reading JSON values -----------------------------------------------------------------------------
fun Any?.obj(): Map<*, *> = this as Map<*, *>
fun Any?.list(): List<*> = this as List<*>
fun Any?.str(): String = this as String
fun Any?.int(): Int = (this as Long).toInt()
fun Any?.long(): Long = this as Long
fun Any?.double(): Double = (this as Number).toDouble()
fun Any?.floats(): FloatArray = list().let { l -> FloatArray(l.size) { (l[it] as Number).toFloat() } }
fun Any?.doubles(): DoubleArray = list().let { l -> DoubleArray(l.size) { (l[it] as Number).toDouble() } }
fun Any?.ints(): List<Int> = list().map { it.int() }
fun Any?.longs(): List<Long> = list().map { it.long() }
fun Any?.strings(): List<String> = list().map { it.str() }

@Suppress("UNCHECKED_CAST")
fun Any?.intMap(): Map<String, Int> = obj().entries.associate { (k, v) -> k as String to v.int() }
fun Any?.doubleMap(): Map<String, Double> = obj().entries.associate { (k, v) -> k as String to v.double() }

/** [expected] and [actual] agree to 1e-6 (relative above 1). */
fun assertClose(expected: Double, actual: Double, what: String, tol: Double = 1e-6) {
    val ok = (expected.isNaN() && actual.isNaN()) || Math.abs(expected - actual) <= tol * maxOf(1.0, Math.abs(expected))
    if (!ok) fail("$what: expected $expected, got $actual")
}

fun assertClose(expected: FloatArray, actual: FloatArray, what: String, tol: Double = 1e-6) {
    assertEquals("$what: length", expected.size, actual.size)
    for (i in expected.indices) assertClose(expected[i].toDouble(), actual[i].toDouble(), "$what[$i]", tol)
}

fun assertBitIdentical(expected: FloatArray, actual: FloatArray, what: String) {
    assertEquals("$what: length", expected.size, actual.size)
    val differ = expected.indices.filter { java.lang.Float.floatToRawIntBits(expected[it]) != java.lang.Float.floatToRawIntBits(actual[it]) }
    assertTrue("$what: ${differ.size} of ${expected.size} values differ in their bits, first at ${differ.firstOrNull()}", differ.isEmpty())
}

/** A deep, mutable copy of a parsed JSON value (for the fixtures' `set` / `delete` edits). */
fun mutableCopy(v: Any?): Any? = when (v) {
    is Map<*, *> -> LinkedHashMap<String, Any?>().also { m -> v.forEach { (k, x) -> m[k as String] = mutableCopy(x) } }
    is List<*> -> ArrayList<Any?>().also { l -> v.forEach { l += mutableCopy(it) } }
    else -> v
}

/** Apply make_fixtures.py's edits: `{"op": "set" | "delete", "path": [keys and indices], "value": ...}`. */
@Suppress("UNCHECKED_CAST")
fun applyOps(doc: Any?, ops: List<*>): Any? {
    var root = mutableCopy(doc)
    for (op in ops) {
        val o = op.obj()
        val path = o["path"].list()
        if (path.isEmpty()) {
            root = mutableCopy(o["value"])
            continue
        }
        var node = root
        for (key in path.dropLast(1)) node = if (key is Long) (node as List<*>)[key.toInt()] else (node as Map<*, *>)[key]
        val last = path.last()
        when {
            o["op"] == "delete" && last is Long -> (node as MutableList<Any?>).removeAt(last.toInt())
            o["op"] == "delete" -> (node as MutableMap<String, Any?>).remove(last as String)
            last is Long -> (node as MutableList<Any?>)[last.toInt()] = mutableCopy(o["value"])
            else -> (node as MutableMap<String, Any?>)[last as String] = mutableCopy(o["value"])
        }
    }
    return root
}
