package org.mobilepeft.core

import java.io.File
import java.nio.ByteBuffer
import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

/** [OrtCheckpoint] on a checkpoint written by onnxruntime-training 1.19.2 (src/test/resources/ort_checkpoint/make_fixture.py). */
class OrtCheckpointTest {
    private val dir: File = listOfNotNull(
        System.getProperty("mobilepeft.coreResources")?.let { File(it, "ort_checkpoint") },
        File("src/test/resources/ort_checkpoint"),
        File(Fixtures.dir, "../../../android_demo/core/src/test/resources/ort_checkpoint"),
    ).first { File(it, "checkpoint").isFile }.canonicalFile

    @Test
    fun readsTheTrainableTensorsOrtWrote() {
        val expected = Json.parseFile(File(dir, "expected.json")).obj()
        val got = OrtCheckpoint.trainable(File(dir, "checkpoint"))
        // Only requires_grad params: the frozen `model.frozen` stored beside them is not returned.
        assertEquals(expected.keys.toList(), got.keys.toList())
        for ((name, spec) in expected) {
            val t = got.getValue(name as String)
            assertEquals(spec.obj()["shape"].list().map { Py.toInt(it) }, t.shape)
            val values = spec.obj()["values"].list().map { Py.toFloat(it) }
            assertEquals(values, t.data.map { it.toDouble() }) // float32 widened: exact
        }
    }

    @Test
    fun refusesOtherFilesWithTheReason() {
        val bytes = File(dir, "checkpoint").readBytes()
        val wrongId = bytes.copyOf().also { it[4] = 'X'.code.toByte() }
        val e = assertThrows(CheckpointError::class.java) { OrtCheckpoint.read(ByteBuffer.wrap(wrongId), "x") }
        assertTrue(e.message!!, e.message!!.contains("file identifier"))
        assertThrows(CheckpointError::class.java) { OrtCheckpoint.read(ByteBuffer.wrap(bytes.copyOf(bytes.size / 2)), "half") }
        assertThrows(CheckpointError::class.java) { OrtCheckpoint.read(ByteBuffer.wrap(ByteArray(3)), "tiny") }
        assertThrows(CheckpointError::class.java) { OrtCheckpoint.trainable(File(dir, "missing")) }
    }
}
