package org.mobilepeft.core

import java.io.File
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/** The personal adapter files, byte for byte, against fixtures/{adapters.json, adapters/} (runtime.adapter.write_adapter). */
class AdapterFixtureTest {
    private val fx = Fixtures.json("adapters.json")

    private class Source(val schedule: RankSchedule, val trainable: List<Trainable>, val params: Map<String, FloatArray>)

    private fun source(name: String): Source {
        val t = fx["tensors"].obj()[name].obj()
        val params = t["params"].obj().entries.associate { (k, v) -> k as String to v.floats() }
        t["manifest"]?.let {
            val m = Manifest.validateBundle(Fixtures.file(it.str()).parentFile)
            return Source(m.schedule, m.trainable, params)
        }
        val trainable = t["trainable"].list().map { e ->
            val o = e.obj()
            val T = Contract.TrainableKey
            Trainable(o[T.NAME].str(), o[T.MODULE].str(), o[T.SLOT].str(), o[T.ROLE].str(), o[T.PARAM].str(), o[T.SHAPE].longs(), o[T.DTYPE].str())
        }
        return Source(RankSchedule.read(t["schedule"]), trainable, params)
    }

    @Test
    fun adapterFilesAreByteIdentical() {
        for (case in fx["cases"].list()) {
            val c = case.obj()
            val s = source(c["tensors"].str())
            val files = AdapterFiles.effectiveAdapter(s.schedule, s.trainable, fx["sdk_version"].str(), s.params, c["masks"].list().map { it.floats() })
            val expected = c["files"].strings()
            assertEquals(expected.map { File(it).name }, files.keys.toList())
            for (path in expected) {
                val want = Fixtures.file(path).readBytes()
                val got = files.getValue(File(path).name)
                assertEquals("$path as text", String(want, Charsets.ISO_8859_1), String(got, Charsets.ISO_8859_1))
                assertArrayEquals(path, want, got)
            }
        }
    }

    @Test
    fun writtenFilesReadBack() {
        val c = fx["cases"].list().first().obj()
        val s = source(c["tensors"].str())
        val dir = AdapterFiles.write(File(Fixtures.tempDir("adapter-"), "out"), AdapterFiles.effectiveAdapter(s.schedule, s.trainable, "x", s.params, c["masks"].list().map { it.floats() }))
        val (tensors, metadata) = Safetensors.read(File(dir, AdapterFiles.WEIGHTS_FILE))
        assertTrue(metadata.containsKey(AdapterFiles.METADATA_KEY))
        assertEquals(6, tensors.size)
        assertEquals(listOf(3L, 16L), tensors.values.first().shape) // q_proj at the soft mask [1, 1, 0.3, 0]
    }
}
