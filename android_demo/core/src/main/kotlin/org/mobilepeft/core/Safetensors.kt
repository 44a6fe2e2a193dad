package org.mobilepeft.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** A float32 tensor: its shape and its values, row-major. */
class Tensor(val shape: List<Long>, val data: FloatArray) {
    init {
        require(shape.fold(1L) { a, b -> a * b } == data.size.toLong()) { "shape $shape does not hold ${data.size} values" }
    }
}

/**
 * safetensors files: u64 little-endian header length, the JSON header (space-padded to a multiple
 * of 8 bytes), the raw little-endian data. [bytes] is mobile_peft/core/adapter_files.py
 * `safetensors_bytes`: tensors in key order, the header compact with sorted metadata first, so the
 * same tensors always give the same bytes (the reference library orders metadata by hash). Float32
 * only: what the phone trains.
 */
object Safetensors {
    const val METADATA = "__metadata__"
    const val F32 = "F32"
    private const val DTYPE = "dtype"
    private const val SHAPE = "shape"
    private const val OFFSETS = "data_offsets"

    fun bytes(tensors: Map<String, Tensor>, metadata: Map<String, String>): ByteArray {
        val header = LinkedHashMap<String, Any?>()
        header[METADATA] = metadata.keys.sortedWith(Py.STRING_ORDER).associateWith { metadata.getValue(it) }
        val keys = tensors.keys.sortedWith(Py.STRING_ORDER)
        var offset = 0L
        for (k in keys) {
            val t = tensors.getValue(k)
            val end = offset + 4L * t.data.size
            header[k] = linkedMapOf(DTYPE to F32, SHAPE to t.shape, OFFSETS to listOf(offset, end))
            offset = end
        }
        var text = Json.dumps(header, itemSeparator = ",", keySeparator = ":").toByteArray(Charsets.UTF_8)
        text += ByteArray((8 - text.size % 8) % 8) { ' '.code.toByte() }
        val out = ByteBuffer.allocate(8 + text.size + offset.toInt()).order(ByteOrder.LITTLE_ENDIAN)
        out.putLong(text.size.toLong())
        out.put(text)
        for (k in keys) for (v in tensors.getValue(k).data) out.putFloat(v)
        return out.array()
    }

    /** `(tensors, metadata)` of a float32 safetensors file. */
    fun read(bytes: ByteArray, source: String = "safetensors"): Pair<Map<String, Tensor>, Map<String, String>> {
        fun bad(why: String): Nothing = throw CheckpointError("$source is not a readable safetensors file: $why")
        if (bytes.size < 8) bad("${bytes.size} bytes")
        val n = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).long
        if (n < 0 || 8 + n > bytes.size) bad("header length $n")
        val header = try {
            Json.parse(String(bytes, 8, n.toInt(), Charsets.UTF_8)) as? Map<*, *> ?: bad("the header is not an object")
        } catch (e: JsonError) {
            bad("the header is not JSON (${e.message})")
        }
        val base = 8 + n.toInt()
        val tensors = LinkedHashMap<String, Tensor>()
        var metadata: Map<String, String> = emptyMap()
        for ((key, value) in header) {
            val o = value as? Map<*, *> ?: bad("entry ${Py.repr(key)} is not an object")
            if (key == METADATA) {
                metadata = o.entries.associate { (k, v) -> k.toString() to Py.str(v) }
                continue
            }
            if (o[DTYPE] != F32) bad("tensor ${Py.repr(key)} is ${Py.repr(o[DTYPE])}; this reader holds $F32 only")
            val shape = (o[SHAPE] as? List<*>)?.map { (it as? Long) ?: bad("tensor ${Py.repr(key)} has shape ${Py.repr(o[SHAPE])}") } ?: bad("tensor ${Py.repr(key)} has no shape")
            val offsets = (o[OFFSETS] as? List<*>)?.map { (it as? Long)?.toInt() ?: bad("bad offsets of ${Py.repr(key)}") } ?: bad("tensor ${Py.repr(key)} has no data_offsets")
            val (start, end) = offsets
            if (start < 0 || end < start || base + end > bytes.size || (end - start) % 4 != 0) bad("tensor ${Py.repr(key)} has offsets $offsets")
            val values = FloatArray((end - start) / 4)
            ByteBuffer.wrap(bytes, base + start, end - start).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values)
            tensors[key.toString()] = try { Tensor(shape, values) } catch (e: IllegalArgumentException) { bad("tensor ${Py.repr(key)}: ${e.message}") }
        }
        return tensors to metadata
    }

    fun read(file: File): Pair<Map<String, Tensor>, Map<String, String>> = read(file.readBytes(), file.path)
}
