package org.mobilepeft.core

import java.io.File
import java.security.MessageDigest

/**
 * sha256 and size of a bundle entry exactly as mobile_peft/core/manifest.py `sha256_of` /
 * `size_of` compute them: a file's bytes; for a directory (an `.mlpackage`), for each file under
 * it in Python's `sorted(Path)` order (component by component, by code point) its POSIX path
 * relative to the directory, a NUL byte, then its bytes. Like `Path.rglob`, directory symlinks are
 * not descended into.
 */
object Checksums {
    private const val CHUNK = 1 shl 20

    /** Files under [dir] with their relative POSIX paths, in Python's sorted-`Path` order. */
    fun filesUnder(dir: File): List<Pair<String, File>> {
        val out = mutableListOf<Pair<List<String>, File>>()
        fun walk(d: File, parts: List<String>) {
            for (child in d.listFiles().orEmpty()) {
                val p = parts + child.name
                if (child.isDirectory) {
                    if (!isSymlink(child)) walk(child, p)
                } else if (child.isFile) {
                    out += p to child
                }
            }
        }
        walk(dir, emptyList())
        val byParts = Comparator<Pair<List<String>, File>> { a, b ->
            val pa = a.first
            val pb = b.first
            for (k in 0 until minOf(pa.size, pb.size)) {
                val c = Py.compare(pa[k], pb[k])
                if (c != 0) return@Comparator c
            }
            pa.size.compareTo(pb.size)
        }
        return out.sortedWith(byParts).map { (parts, f) -> parts.joinToString("/") to f }
    }

    private fun isSymlink(f: File): Boolean =
        f.canonicalFile.absolutePath != File(f.parentFile.canonicalFile, f.name).absolutePath

    fun sizeOf(f: File): Long = if (f.isFile) f.length() else filesUnder(f).sumOf { it.second.length() }

    fun sha256Of(f: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        val buf = ByteArray(CHUNK)
        val entries = if (f.isFile) listOf("" to f) else filesUnder(f)
        for ((rel, file) in entries) {
            if (!f.isFile) {
                md.update(rel.toByteArray(Charsets.UTF_8))
                md.update(0)
            }
            file.inputStream().use { input ->
                while (true) {
                    val n = input.read(buf)
                    if (n < 0) break
                    md.update(buf, 0, n)
                }
            }
        }
        return hex(md.digest())
    }

    fun sha256Of(bytes: ByteArray): String = hex(MessageDigest.getInstance("SHA-256").digest(bytes))

    private fun hex(bytes: ByteArray): String {
        val digits = "0123456789abcdef"
        val out = StringBuilder(bytes.size * 2)
        for (b in bytes) out.append(digits[(b.toInt() shr 4) and 0xF]).append(digits[b.toInt() and 0xF])
        return out.toString()
    }
}
