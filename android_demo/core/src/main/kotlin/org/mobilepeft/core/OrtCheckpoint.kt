package org.mobilepeft.core

import java.io.File
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

/**
 * Reads the trainable tensors out of an ONNX Runtime training checkpoint file (what
 * `OrtTrainingSession.saveCheckpoint` / `CheckpointState.save_checkpoint` write): ORT's Java API
 * (1.19.2, the last release) has no call that returns a parameter's values, so the app reads them
 * from the checkpoint it just saved to write the personal adapter on the phone.
 *
 * The file is a FlatBuffer with the identifier `ODTC`, schema
 * `onnxruntime/core/flatbuffers/schema/ort_training_checkpoint.fbs` (+ `ort.fbs` for `Tensor`) in
 * microsoft/onnxruntime:
 *
 *     Checkpoint  { version:int32; module_state:ModuleState; optimizer_groups; property_bag }
 *     ModuleState { requires_grad_params:[Tensor]; frozen_params:[Tensor]; is_nominal_state:bool; has_external_data:bool }
 *     Tensor      { name:string; doc_string:string; dims:[int64]; data_type:int32; raw_data:[uint8]; string_data; external_data_offset:int64 }
 *
 * Only `requires_grad_params` are read (the adapter tensors); the file is memory-mapped, so the
 * frozen backbone stored beside them is not read into memory. float32 (`data_type` 1) with inline
 * `raw_data` only: a nominal checkpoint or one whose trainable tensors live in an external data
 * file is refused with a [CheckpointError]. The test reads a checkpoint written by
 * onnxruntime-training 1.19.2 (`OrtCheckpointTest`).
 */
object OrtCheckpoint {
    const val FILE_IDENTIFIER = "ODTC"
    private const val FLOAT = 1

    /** The `requires_grad_params` of [file], by name, in file order (a saved checkpoint sorts them; `generate_artifacts` may not). */
    fun trainable(file: File): LinkedHashMap<String, Tensor> {
        if (!file.isFile) throw CheckpointError("no ONNX Runtime checkpoint at $file")
        val buffer = RandomAccessFile(file, "r").use { raf ->
            raf.channel.map(FileChannel.MapMode.READ_ONLY, 0, raf.length())
        }
        return read(buffer.order(ByteOrder.LITTLE_ENDIAN), file.path)
    }

    fun read(bytes: ByteBuffer, source: String): LinkedHashMap<String, Tensor> {
        val b = bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN)
        fun bad(why: String): Nothing = throw CheckpointError("$source is not a readable ONNX Runtime checkpoint: $why")
        if (b.limit() < 8) bad("${b.limit()} bytes")
        val id = String(ByteArray(4) { b.get(4 + it) }, Charsets.US_ASCII)
        if (id != FILE_IDENTIFIER) bad("file identifier '${id}', expected '$FILE_IDENTIFIER'")
        val reader = Reader(b, ::bad)
        val root = reader.indirect(0)
        val module = reader.table(root, 1) ?: bad("no module_state")
        if (reader.bool(module, 2)) bad("it is a nominal checkpoint (shapes only, no values)")
        val params = reader.vector(module, 0) ?: return LinkedHashMap()
        val out = LinkedHashMap<String, Tensor>()
        for (i in 0 until reader.length(params)) {
            val t = reader.indirect(params + 4 + 4 * i)
            val name = reader.string(t, 0) ?: bad("a trainable tensor without a name")
            val dims = reader.vector(t, 2)?.let { v -> List(reader.length(v)) { b.getLong(v + 4 + 8 * it) } } ?: emptyList()
            val type = reader.int(t, 3)
            if (type != FLOAT) bad("tensor '$name' has ONNX data type $type; only float32 (1) adapter tensors are read")
            val raw = reader.vector(t, 4)
            val numel = dims.fold(1L) { a, d -> a * d }
            if (raw == null || (reader.length(raw) == 0 && numel > 0)) {
                bad("tensor '$name' has no inline data (an external data file?); save the checkpoint without external data")
            }
            if (reader.length(raw).toLong() != 4 * numel) bad("tensor '$name' has ${reader.length(raw)} bytes for dims $dims")
            val values = FloatArray(numel.toInt())
            val view = b.duplicate().order(ByteOrder.LITTLE_ENDIAN)
            view.position(raw + 4)
            view.asFloatBuffer().get(values)
            out[name] = Tensor(dims, values)
        }
        return out
    }

    /** FlatBuffers' binary layout: little-endian; a table starts with an int32 offset back to its vtable. */
    private class Reader(val b: ByteBuffer, val bad: (String) -> Nothing) {
        fun check(pos: Int, size: Int): Int {
            if (pos < 0 || pos.toLong() + size > b.limit()) bad("offset $pos is outside the file")
            return pos
        }

        /** The target of the uoffset stored at [pos]. */
        fun indirect(pos: Int): Int = check(pos, 4).let { check(it + b.getInt(it), 4) }

        /** Absolute position of field [index] of the table at [table], or -1 when absent. */
        fun field(table: Int, index: Int): Int {
            val vtable = check(table - b.getInt(check(table, 4)), 4)
            val vsize = b.getShort(vtable).toInt() and 0xffff
            val slot = 4 + 2 * index
            if (slot + 2 > vsize) return -1
            val off = b.getShort(check(vtable + slot, 2)).toInt() and 0xffff
            return if (off == 0) -1 else check(table + off, 1)
        }

        fun table(table: Int, index: Int): Int? = field(table, index).takeIf { it >= 0 }?.let(::indirect)

        fun vector(table: Int, index: Int): Int? = table(table, index)

        fun length(vector: Int): Int = b.getInt(check(vector, 4)).also { if (it < 0) bad("negative vector length") }

        fun string(table: Int, index: Int): String? = vector(table, index)?.let { v ->
            val n = length(v)
            check(v + 4, n)
            String(ByteArray(n) { b.get(v + 4 + it) }, Charsets.UTF_8)
        }

        fun int(table: Int, index: Int): Int = field(table, index).let { if (it < 0) 0 else b.getInt(check(it, 4)) }

        fun bool(table: Int, index: Int): Boolean = field(table, index).let { it >= 0 && b.get(it).toInt() != 0 }
    }
}
