package org.mobilepeft.core

import java.io.File
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** Validation beyond the fixtures: one error naming every problem, and the checks only the phone makes. */
class ValidationTest {
    private val bundle = Fixtures.file("bundle")
    private val manifest = Json.parseFile(File(bundle, Contract.MANIFEST_FILE))

    private fun problemsOf(edit: (MutableMap<String, Any?>) -> Unit): List<String> {
        @Suppress("UNCHECKED_CAST")
        val m = mutableCopy(manifest) as MutableMap<String, Any?>
        edit(m)
        return try {
            Manifest.fromJson(m, "test")
            emptyList()
        } catch (e: BundleError) {
            assertEquals("bundle test is invalid:\n  - " + e.problems.joinToString("\n  - "), e.message)
            e.problems
        }
    }

    @Suppress("UNCHECKED_CAST")
    private fun MutableMap<String, Any?>.sub(key: String) = this[key] as MutableMap<String, Any?>

    @Test
    fun everyMissingKeyIsNamedInOneError() {
        val problems = problemsOf { m ->
            m.remove(Contract.Key.BACKBONE)
            m.sub(Contract.Key.INPUT_SPEC).remove(Contract.InputSpecKey.IMAGE_MEAN)
            m.sub(Contract.Key.OPTIMIZER).remove(Contract.OptimizerKey.NAME)
        }
        assertEquals(
            listOf(
                "missing key '${Contract.Key.BACKBONE}'",
                "missing key ${Contract.Key.INPUT_SPEC}.${Contract.InputSpecKey.IMAGE_MEAN}",
                "missing key ${Contract.Key.OPTIMIZER}.${Contract.OptimizerKey.NAME}",
            ),
            problems,
        )
    }

    @Test
    fun theMaskInputNameMustFollowTheContract() {
        val problems = problemsOf { m ->
            @Suppress("UNCHECKED_CAST")
            val inputs = m.sub(Contract.Key.RANK_SCHEDULE)[Contract.ScheduleKey.MASK_INPUTS] as MutableList<MutableMap<String, Any?>>
            inputs[1][Contract.MaskInputKey.INPUT] = "v_mask"
        }
        assertEquals(1, problems.size)
        assertTrue(problems[0], problems[0].startsWith("invalid ${Contract.Key.RANK_SCHEDULE}:\n  - ${Contract.ScheduleKey.MASK_INPUTS}[1].${Contract.MaskInputKey.INPUT} is 'v_mask'"))
    }

    @Test
    fun everyPhaseMustRankEveryMaskedSlot() {
        val problems = problemsOf { m ->
            @Suppress("UNCHECKED_CAST")
            val phases = m.sub(Contract.Key.RANK_SCHEDULE)[Contract.ScheduleKey.PHASES] as MutableList<MutableMap<String, Any?>>
            @Suppress("UNCHECKED_CAST")
            val ranks = phases[2][Contract.PhaseKey.RANKS] as MutableMap<String, MutableMap<String, Any?>>
            val (module, slots) = ranks.entries.first()
            slots.clear() // the module is still named, so the SDK's module check passes
            assertTrue(module.isNotEmpty())
        }
        assertEquals(listOf("${Contract.Key.RANK_SCHEDULE}.${Contract.ScheduleKey.PHASES}[2] gives no rank for language_model.model.layers.0.self_attn.q_proj.lora (mask input 0)"), problems)
    }

    @Test
    fun float16AdaptersAreValidForTheSdkButNotForThisApp() {
        val problems = problemsOf { m ->
            @Suppress("UNCHECKED_CAST")
            (m[Contract.Key.TRAINABLE] as MutableList<MutableMap<String, Any?>>)[0][Contract.TrainableKey.DTYPE] = "float16"
        }
        assertEquals(listOf("${Contract.Key.TRAINABLE}[0].${Contract.TrainableKey.DTYPE} is 'float16'; this app trains float32 adapter tensors only"), problems)
    }

    @Test
    @Suppress("UNCHECKED_CAST")
    fun filesOutsideTheBundleAreRefusedBeforeTheyAreOpened() {
        val copy = Fixtures.copyTree(bundle, File(Fixtures.tempDir("b-"), "b"))
        val m = mutableCopy(manifest) as MutableMap<String, Any?>
        (m[Contract.Key.FILES] as MutableList<MutableMap<String, Any?>>)[1][Contract.FileKey.PATH] = "../secret"
        File(copy, Contract.MANIFEST_FILE).writeText(Json.dumps(m, indent = 1))
        try {
            Manifest.validateBundle(copy)
            fail("validated")
        } catch (e: BundleError) {
            assertTrue(e.problems.toString(), e.problems.any { it.contains("'../secret'") })
        }
    }

    @Test
    fun notABundle() {
        for ((dir, want) in listOf(
            File(Fixtures.dir, "nothing-here") to "not a directory",
            Fixtures.file("checksums") to "no ${Contract.MANIFEST_FILE}",
        )) {
            try {
                Manifest.validateBundle(dir)
                fail("validated $dir")
            } catch (e: BundleError) {
                assertTrue(e.message!!, e.problems.single().startsWith(want))
            }
        }
        val broken = File(Fixtures.tempDir("b-"), "b").also { it.mkdirs() }
        File(broken, Contract.MANIFEST_FILE).writeText("{\"a\": 1,}")
        try {
            Manifest.validateBundle(broken)
            fail("validated")
        } catch (e: BundleError) {
            assertEquals(
                "${Contract.MANIFEST_FILE} is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 9 (char 8))",
                e.problems.single(),
            )
        }
    }
}
