package org.mobilepeft.demo

import java.io.File
import java.io.FileOutputStream
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import org.json.JSONArray
import org.json.JSONObject

/**
 * Crash-safe checkpoints on the phone. Every file is written to a temp file in the same directory,
 * fsynced, then renamed over the old one (rename within one file system is atomic), so a killed app
 * leaves either the previous checkpoint or the new one, never half of one.
 *
 * `pte` bundles: the Kotlin TrainingModule has no save call, so the adapter tensors are copied out of
 * `namedParameters` into a safetensors file (names = manifest `trainable` names, F32, row-major).
 * `onnx` bundles: ONNX Runtime's own checkpoint (weights + optimiser state).
 * Both: `trainer_state.json` with the step and the bundle it belongs to.
 *
 * These file names are the app's own, not part of the bundle contract. The SDK turns the tensors into
 * the personal PEFT adapter (adapter_config.json + adapter_model.safetensors, rank masks folded in).
 */
object Checkpoint {
    const val TENSORS_FILE = "adapter_tensors.safetensors"
    const val ORT_CHECKPOINT_FILE = "ort_checkpoint"
    const val STATE_FILE = "trainer_state.json"

    fun writeAtomic(target: File, write: (File) -> Unit) {
        val dir = target.absoluteFile.parentFile!!
        dir.mkdirs()
        val tmp = File(dir, ".${target.name}.tmp")
        tmp.delete()
        try {
            write(tmp)
            RandomAccessFile(tmp, "rw").use { it.fd.sync() }
            Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
        } finally {
            tmp.delete()
        }
        // fsync the directory so the rename itself survives power loss; not every file system lets
        // us open a directory, and the rename is already atomic, so this is best effort.
        runCatching { RandomAccessFile(dir, "r").use { it.fd.sync() } }
    }

    fun writeState(dir: File, step: Int, manifest: Manifest) {
        val state = JSONObject()
            .put("step", step)
            .put("format", manifest.format)
            .put("bundle_files", JSONArray(manifest.files.map { it.sha256 }))
        writeAtomic(File(dir, STATE_FILE)) { it.writeText(state.toString(1)) }
    }

    /** The saved step, or null when [dir] has no checkpoint of this very bundle (same file hashes). */
    fun readState(dir: File, manifest: Manifest): Int? {
        val f = File(dir, STATE_FILE)
        if (!f.isFile) return null
        val o = JSONObject(f.readText())
        val hashes = o.optJSONArray("bundle_files") ?: return null
        val same = (0 until hashes.length()).map { hashes.getString(it) } == manifest.files.map { it.sha256 }
        return if (same && o.optString("format") == manifest.format) o.getInt("step") else null
    }

    /** safetensors: u64 LE header length, JSON header (space-padded to 8 bytes), raw LE data. */
    fun writeSafetensors(target: File, tensors: Map<String, Pair<LongArray, FloatArray>>, metadata: Map<String, String>) {
        val header = JSONObject()
        header.put("__metadata__", JSONObject(metadata))
        var offset = 0L
        val names = tensors.keys.sorted()
        for (name in names) {
            val (shape, data) = tensors.getValue(name)
            val end = offset + 4L * data.size
            header.put(name, JSONObject().put("dtype", "F32").put("shape", JSONArray(shape.toList())).put("data_offsets", JSONArray(listOf(offset, end))))
            offset = end
        }
        var headerBytes = header.toString().toByteArray(Charsets.UTF_8)
        val pad = (8 - headerBytes.size % 8) % 8
        headerBytes += ByteArray(pad) { ' '.code.toByte() }
        writeAtomic(target) { tmp ->
            FileOutputStream(tmp).buffered().use { out ->
                out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerBytes.size.toLong()).array())
                out.write(headerBytes)
                for (name in names) {
                    val data = tensors.getValue(name).second
                    val buf = ByteBuffer.allocate(4 * data.size).order(ByteOrder.LITTLE_ENDIAN)
                    buf.asFloatBuffer().put(data)
                    out.write(buf.array())
                }
            }
        }
    }

    fun readSafetensors(file: File): Map<String, Pair<LongArray, FloatArray>> {
        val bytes = file.readBytes()
        val n = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).long.toInt()
        val header = JSONObject(String(bytes, 8, n, Charsets.UTF_8))
        val base = 8 + n
        val out = LinkedHashMap<String, Pair<LongArray, FloatArray>>()
        for (name in header.keys()) {
            if (name == "__metadata__") continue
            val t = header.getJSONObject(name)
            require(t.getString("dtype") == "F32") { "$file: tensor '$name' is ${t.getString("dtype")}; this app writes and reads F32 only" }
            val shape = t.getJSONArray("shape").let { a -> LongArray(a.length()) { a.getLong(it) } }
            val off = t.getJSONArray("data_offsets")
            val start = base + off.getLong(0).toInt()
            val end = base + off.getLong(1).toInt()
            val values = FloatArray((end - start) / 4)
            ByteBuffer.wrap(bytes, start, end - start).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values)
            out[name] = shape to values
        }
        return out
    }
}
