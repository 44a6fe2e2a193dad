package org.mobilepeft.core

import java.io.File
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** The bundle, its schedule and the validator against fixtures/{bundle, schedule.json, manifest_problems.json}. */
class ManifestFixtureTest {
    private val bundle = Fixtures.file("bundle")
    private val manifestJson = Json.parseFile(File(bundle, Contract.MANIFEST_FILE))

    @Test
    fun theSdksBundleValidates() {
        val m = Manifest.validateBundle(bundle)
        assertEquals(Contract.FORMAT_ONNX, m.format)
        assertEquals(6, m.trainable.size)
        assertEquals(listOf(Contract.ROLE_DOWN, Contract.ROLE_UP), m.slotPairs().values.first().keys.toList())
        assertEquals(12, m.inputSpec.spec.imageSize)
        assertEquals(TokenIds(0, 1, 2, Contract.IGNORE_INDEX), m.inputSpec.tokenIds)
        assertEquals(3, m.schedule.maskInputs.size)
        assertTrue(m.schedule.hasScales)
        assertEquals(0.001, m.optimizer.lr, 0.0)
        assertEquals(5, m.files.size)
    }

    @Test
    fun everyProblemIsPythons() {
        val fx = Fixtures.json("manifest_problems.json")
        for (case in fx["cases"].list()) {
            val c = case.obj()
            val edited = applyOps(manifestJson, c["ops"].list())
            assertEquals("case '${c["name"]}'", c["problems"].strings(), manifestProblems(edited))
        }
    }

    @Test
    fun damagedFilesAreReportedAsPythonReportsThem() {
        val fx = Fixtures.json("manifest_problems.json")
        for (case in fx["tampered"].list()) {
            val c = case.obj()
            val copy = Fixtures.copyTree(bundle, File(Fixtures.tempDir("bundle-"), "b"))
            for ((name, action) in c["actions"].obj()) {
                val f = File(copy, name as String)
                when (action) {
                    "append" -> f.appendBytes(byteArrayOf('!'.code.toByte()))
                    "flip" -> f.writeBytes(f.readBytes().also { it[0] = (it[0].toInt() xor 1).toByte() })
                    else -> f.delete()
                }
            }
            try {
                Manifest.validateBundle(copy)
                fail("case '${c["name"]}' validated")
            } catch (e: BundleError) {
                assertEquals("case '${c["name"]}'", c["problems"].strings(), e.problems)
                assertEquals("bundle ${copy.path} is invalid:\n  - " + e.problems.joinToString("\n  - "), e.message)
            }
        }
    }

    @Test
    fun phasesRanksAndMasksArePythons() {
        val fx = Fixtures.json("schedule.json")
        val s = Manifest.validateBundle(bundle).schedule
        for ((step, index) in fx["phase_index"].obj()) assertEquals("phase at step $step", index.int(), s.phaseIndex((step as String).toInt()))
        fx["phases"].list().forEachIndexed { i, p ->
            val phase = p.obj()
            val ranks = phase["ranks"].obj().entries.associate { (m, slots) -> m as String to slots.intMap() }
            assertEquals("ranks of phase $i", ranks, s.ranks(i))
            assertEquals("params of phase $i", phase["params"].long(), s.params(s.ranks(i)))
            val masks = s.phaseMasks(i)
            phase["masks"].list().forEachIndexed { j, m -> assertBitIdentical(m.floats(), masks[j], "phase $i mask $j") }
        }
        val units = fx["units"].obj().entries.associate { (u, v) -> u as String to UnitInfo(v.obj()[Contract.SlotKey.R_MAX].int(), v.obj()[Contract.SlotKey.PARAMS_PER_RANK].long()) }
        assertEquals(units, s.units())
        assertEquals(units.keys.toList(), s.units().keys.toList())
    }

    @Test
    fun checksumsArePythons() {
        val fx = Fixtures.json("checksums.json")
        val tree = Fixtures.file("checksums")
        assertEquals(fx["directory"].obj()["sha256"], Checksums.sha256Of(tree))
        assertEquals(fx["directory"].obj()["size"].long(), Checksums.sizeOf(tree))
        for ((name, v) in fx["files"].obj()) {
            assertEquals(name as String, v.obj()["sha256"], Checksums.sha256Of(File(tree, name)))
            assertEquals(name, v.obj()["size"].long(), Checksums.sizeOf(File(tree, name)))
        }
    }
}
