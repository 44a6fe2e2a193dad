package org.mobilepeft.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** Small behaviours of the schedule, tokenizer, safetensors, units and prompt template. */
class CoreUnitTest {
    private val m = "language_model.model.layers.0.mlp.up_proj"
    private val lora = Contract.SLOTS.getValue(Contract.ADAPTER_LORA)[0]

    private fun schedule(vararg phases: Phase) = RankSchedule(
        "uniform", Contract.ADAPTER_LORA, 100, mapOf(m to mapOf(lora to SlotInfo(4, 10, null))), phases.toList(),
        listOf(MaskInput(m, lora, 4)), 0.0,
    )

    @Test
    fun theActivePhaseIsTheLastThatHasStarted() {
        val s = schedule(Phase(0, mapOf(m to mapOf(lora to 4))), Phase(3, mapOf(m to mapOf(lora to 1))), Phase(10, mapOf(m to mapOf(lora to 0))))
        assertEquals(listOf(0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2), (0..11).map(s::phaseIndex))
        assertArrayEquals(floatArrayOf(1f, 0f, 0f, 0f), s.phaseMasks(1)[0], 0f)
        assertArrayEquals(floatArrayOf(0f, 0f, 0f, 0f), s.phaseMasks(2)[0], 0f)
        assertEquals(10L, s.params(s.ranks(1)))
        assertTrue(!s.hasScales)
        try {
            s.scale(m, lora)
            fail("a slot without a scale gave one")
        } catch (e: ConfigError) {
            assertTrue(e.message!!.contains("re-export"))
        }
    }

    @Test
    fun softMasksOverrideThePrefixMask() {
        val soft = floatArrayOf(1f, 0.5f, 0.25f, 0f)
        val s = schedule(Phase(0, mapOf(m to mapOf(lora to 2)), mapOf(m to mapOf(lora to soft))))
        assertArrayEquals(soft, s.phaseMasks(0)[0], 0f)
        assertArrayEquals(floatArrayOf(1f, 1f, 1f, 0f), s.inputMasks(mapOf(m to mapOf(lora to 3)))[0], 0f)
    }

    @Test
    fun scheduleJsonProblemsAreCollected() {
        try {
            RankSchedule.read(mapOf(Contract.ScheduleKey.SCHEMA to "x"), where = "plan.json")
            fail("read")
        } catch (e: ConfigError) {
            assertEquals(
                "invalid plan.json:\n  - schema is 'x'; expected '${ScheduleFormat.SCHEMA}'\n  - version is None; this mobile-peft reads version 1\n" +
                    Contract.RANK_SCHEDULE_KEYS.joinToString("\n") { "  - missing key '$it'" },
                e.message,
            )
        }
    }

    @Test
    @Suppress("UNCHECKED_CAST")
    fun otherTokenizerTypesAreRefusedClearly() {
        val base = Json.parseFile(Fixtures.file("bundle/${Contract.TOKENIZER_FILE}")).let { mutableCopy(it) } as MutableMap<String, Any?>
        val bpe = mutableCopy(base) as MutableMap<String, Any?>
        (bpe["model"] as MutableMap<String, Any?>)["type"] = "BPE"
        val byteLevel = mutableCopy(base) as MutableMap<String, Any?>
        byteLevel["pre_tokenizer"] = mapOf("type" to "ByteLevel")
        val nfkc = mutableCopy(base) as MutableMap<String, Any?>
        nfkc["normalizer"] = mapOf("type" to "Sequence", "normalizers" to listOf(mapOf("type" to "NFKC"), mapOf("type" to "Lowercase")))
        for ((doc, want) in listOf(bpe to "model type is 'BPE'", byteLevel to "pre-tokenizer 'ByteLevel'", nfkc to "normalizer 'NFKC'")) {
            try {
                WordLevelTokenizer.fromJson(doc, "t.json")
                fail("accepted $want")
            } catch (e: UnsupportedTokenizerError) {
                assertTrue(e.message!!, e.message!!.startsWith("t.json: its $want") && e.message!!.contains("WordLevel"))
            }
        }
        WordLevelTokenizer.fromJson(base) // the SDK's own loads
    }

    @Test
    fun safetensorsRoundTrip() {
        val tensors = mapOf("b" to Tensor(listOf(2L, 2L), floatArrayOf(1f, -2f, 3.5f, Float.MIN_VALUE)), "a" to Tensor(listOf(0L, 3L), FloatArray(0)))
        val bytes = Safetensors.bytes(tensors, mapOf("z" to "1", "k" to "v"))
        assertEquals(0, (bytes.size - 8) % 4)
        val header = String(bytes, 8, java.nio.ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).long.toInt())
        assertTrue(header, header.startsWith("{\"__metadata__\":{\"k\":\"v\",\"z\":\"1\"},\"a\":"))
        assertEquals(0, header.length % 8)
        val (back, meta) = Safetensors.read(bytes)
        assertEquals(listOf("a", "b"), back.keys.toList())
        assertArrayEquals(tensors.getValue("b").data, back.getValue("b").data, 0f)
        assertEquals(mapOf("k" to "v", "z" to "1"), meta)
        try {
            Safetensors.read(bytes.copyOf(20), "x")
            fail("read a truncated file")
        } catch (e: CheckpointError) {
            assertTrue(e.message!!.startsWith("x is not a readable safetensors file"))
        }
    }

    @Test
    fun unitsAndPlaces() {
        assertEquals("$m::$lora", Units.key(m, lora))
        assertEquals(m to lora, Units.split("$m::$lora"))
        assertEquals(Units.Place("language", 0, "mlp.up_proj", "mlp"), Units.place(m))
        assertEquals(Units.Place("vision", 11, "self_attn.q_proj", "attn"), Units.place("vision_tower.vision_model.encoder.layers.11.self_attn.q_proj"))
        assertEquals(Units.Place("projector", 0, "linear_1", "proj"), Units.place("multi_modal_projector.linear_1"))
        assertEquals("language.mlp" to 0, PerfModel.unitGroup("$m::$lora"))
    }

    @Test
    fun promptTemplatesFillOnlyTheQuestion() {
        assertEquals("q: {x} is it? a:", Encoder.formatPrompt("q: {{x}} {question} a:", "is it?"))
        try {
            Encoder.formatPrompt("{question} {other}", "q")
            fail("filled an unknown field")
        } catch (e: ConfigError) {
            assertTrue(e.message!!.contains("a field other than {question}"))
        }
    }

    @Test
    fun imagesOutOfRangeAreRefused() {
        try {
            Image.fromFloats(1, 2, 1, floatArrayOf(0f, 255f))
            fail("accepted 0..255 floats")
        } catch (e: DataError) {
            assertTrue(e.message!!.startsWith("float image has values in [0.0, 255.0]; expected 0..1"))
        }
        try {
            Image.fromBytes(2, 2, 4, ByteArray(16))
            fail("accepted RGBA")
        } catch (e: DataError) {
            assertTrue(e.message!!.contains("Convert RGBA"))
        }
    }
}
