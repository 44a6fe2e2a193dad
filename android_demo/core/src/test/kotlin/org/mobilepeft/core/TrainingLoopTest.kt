package org.mobilepeft.core

import java.io.File
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** The training loop over a fake [Trainer]: checkpoints, resume, cancel, bad steps. */
class TrainingLoopTest {
    private val module = "language_model.model.layers.0.self_attn.q_proj"
    private val slot = Contract.SLOTS.getValue(Contract.ADAPTER_LORA)[0]
    private val schedule = RankSchedule(
        allocator = "uniform", adapter = Contract.ADAPTER_LORA, budgetParams = 40,
        modules = mapOf(module to mapOf(slot to SlotInfo(4, 10, 2.0))),
        phases = listOf(Phase(0, mapOf(module to mapOf(slot to 4))), Phase(5, mapOf(module to mapOf(slot to 2)))),
        maskInputs = listOf(MaskInput(module, slot, 4)), dropout = 0.0,
    )

    /** What every fake trainer of one test did, across re-opens. */
    private class Log {
        var calls = 0
        val batches = mutableListOf<List<Long>>()
        val masks = mutableListOf<Float>()
        var discarded = 0
        var opened = mutableListOf<File?>()
    }

    /**
     * Weights move by each applied batch's index sum and mask sum, so the final weights depend on
     * exactly which batches were applied in which order, and under which phase.
     */
    private class Fake(
        private val log: Log,
        private val lossAt: (Int) -> Float,
        private val gradsFinite: (Int) -> Boolean,
        private val poisonAt: Int,
    ) : Trainer {
        var w = FloatArray(2)
        private var pending: FloatArray? = null
        private var call = -1

        override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float {
            call = log.calls++
            log.batches += batch.inputIds.toList()
            log.masks += masks[0].sum()
            pending = floatArrayOf(batch.inputIds.sum().toFloat(), masks[0].sum())
            return lossAt(call)
        }

        override fun gradientsFinite() = gradsFinite(call)

        override fun applyStep() {
            val g = pending!!
            w = floatArrayOf(w[0] + g[0], w[1] * 0.5f + g[1])
            if (call == poisonAt) w[0] = Float.NaN
            pending = null
        }

        override fun discardStep() {
            pending = null
            log.discarded++
        }

        override fun save(dir: File) {
            File(dir, "w.safetensors").writeBytes(Safetensors.bytes(mapOf("w" to Tensor(listOf(2L), w)), emptyMap()))
        }

        fun restore(dir: File) {
            w = Safetensors.read(File(dir, "w.safetensors")).first.getValue("w").data
        }

        override fun parameters() = mapOf("w" to w.copyOf())

        override fun close() {}
    }

    private fun batchOf(indices: IntArray) = Batch(FloatArray(0), LongArray(indices.size) { indices[it].toLong() }, LongArray(indices.size), indices.size, 0, 1)

    private fun loop(
        runDir: File,
        log: Log,
        steps: Int = 12,
        every: Int = 4,
        maxBad: Int = 5,
        seed: Long = 3,
        bundle: String = "bundle-a",
        lossAt: (Int) -> Float = { 1f / (it + 1) },
        gradsFinite: (Int) -> Boolean = { true },
        poisonAt: Int = -1,
        cancelled: () -> Boolean = { false },
    ) = TrainingLoop(
        schedule, bundle, examples = 7, batchSize = 3, batchOf = ::batchOf,
        options = TrainOptions(steps, checkpointEvery = every, seed = seed, maxBadSteps = maxBad),
        store = CheckpointStore(runDir),
        factory = TrainerFactory { from -> log.opened += from; Fake(log, lossAt, gradsFinite, poisonAt).also { f -> from?.let(f::restore) } },
        cancelled = cancelled,
    )

    private fun run() = File(Fixtures.tempDir("run-"), "run")

    @Test
    fun aCompleteRunCheckpointsOnCadenceAndKeepsTheNewest() {
        val dir = run()
        val log = Log()
        val result = loop(dir, log).run()
        assertEquals(StopReason.COMPLETED, result.stop)
        assertEquals(12, result.step)
        assertEquals(12, result.losses.size)
        assertNull(result.resumedFrom)
        assertEquals(listOf("ckpt-00000008", "ckpt-00000012"), CheckpointStore(dir).complete().map { it.name })
        assertEquals(result.checkpoint, CheckpointStore(dir).latest())
        // The batches are the reference runtime's stream for (7 examples, batch 3, seed 3).
        val stream = DataStream(7, 3, StreamPosition(seed = 3))
        assertEquals(List(12) { stream.next().map(Int::toLong) }, log.batches)
        // Phase 1 (rank 2) from step 5 on: the masks the trainer saw.
        assertEquals(List(5) { 4f } + List(7) { 2f }, log.masks)
        assertEquals(2, result.masks[0].sum().toInt())
    }

    @Test
    fun aCancelledRunResumesToTheSameWeightsAsAnUninterruptedOne() {
        val fullLog = Log()
        val full = loop(run(), fullLog).run()

        val dir = run()
        val log = Log()
        var applied = 0
        val first = loop(dir, log, lossAt = { applied = it; 1f / (it + 1) }, cancelled = { log.calls == 6 }).run()
        assertEquals(StopReason.CANCELLED, first.stop)
        assertEquals(6, first.step)
        assertEquals("ckpt-00000006", first.checkpoint!!.name)
        assertEquals(5, applied)

        val second = loop(dir, log, lossAt = { 1f / (it + 1) }).run()
        assertEquals(6, second.resumedFrom)
        assertEquals(12, second.step)
        assertEquals(full.losses, second.losses)
        assertEquals(fullLog.batches, log.batches)
        assertEquals(full.parameters.getValue("w").toList(), second.parameters.getValue("w").toList())
        assertEquals(listOf(null, File(CheckpointStore(dir).root, "ckpt-00000006")), log.opened)

        // Resuming a finished run trains nothing and writes nothing new.
        val third = loop(dir, log).run()
        assertEquals(12, third.step)
        assertEquals(12, third.resumedFrom)
        assertEquals(listOf("ckpt-00000008", "ckpt-00000012"), CheckpointStore(dir).complete().map { it.name })
    }

    @Test
    fun cancellationIsCheckedBeforeEveryStep() {
        val dir = run()
        val log = Log()
        val result = loop(dir, log, cancelled = { true }).run()
        assertEquals(StopReason.CANCELLED, result.stop)
        assertEquals(0, log.calls)
        assertNull(result.checkpoint) // nothing trained, nothing written
        assertEquals(emptyList<File>(), CheckpointStore(dir).complete())
    }

    @Test
    fun nonFiniteLossesAreNotAppliedButCounted() {
        val log = Log()
        val bad = setOf(2, 3)
        val result = loop(run(), log, lossAt = { if (it in bad) Float.NaN else 1f }).run()
        assertEquals(12, result.step)
        assertEquals(2, result.badSteps)
        assertEquals(2, log.discarded)
        assertTrue(result.losses[2].isNaN() && result.losses[3].isNaN())
        // Same weights as applying every batch but those two.
        var w = floatArrayOf(0f, 0f)
        log.batches.forEachIndexed { i, b -> if (i !in bad) w = floatArrayOf(w[0] + b.sum().toFloat(), w[1] * 0.5f + log.masks[i]) }
        assertEquals(w.toList(), result.parameters.getValue("w").toList())
    }

    @Test
    fun nonFiniteGradientsAreBadStepsToo() {
        val log = Log()
        val result = loop(run(), log, gradsFinite = { it != 4 }).run()
        assertEquals(1, result.badSteps)
        assertEquals(1, log.discarded)
    }

    @Test
    fun tooManyBadStepsStopTheRunWithTheLastGoodCheckpointIntact() {
        val dir = run()
        val log = Log()
        try {
            loop(dir, log, every = 1, maxBad = 2, lossAt = { if (it >= 1) Float.POSITIVE_INFINITY else 1f }).run()
            fail("the run did not stop")
        } catch (e: DivergedError) {
            assertTrue(e.message!!, e.message!!.startsWith("3 training steps had a non-finite loss or gradient (the last at step 4; maxBadSteps is 2)"))
        }
        val store = CheckpointStore(dir)
        assertEquals("ckpt-00000003", store.latest()!!.name)
        assertEquals(3L, store.meta(store.latest()!!)[CheckpointStore.STEP])
        assertEquals(2L, store.meta(store.latest()!!)[TrainingLoop.BAD_STEPS])
    }

    @Test
    fun nonFiniteWeightsAreNeverCheckpointed() {
        val dir = run()
        try {
            loop(dir, Log(), poisonAt = 5).run()
            fail("a NaN weight was checkpointed")
        } catch (e: DivergedError) {
            assertTrue(e.message!!, e.message!!.startsWith("at step 8 the trained tensors are not finite (['w'])"))
        }
        assertEquals("ckpt-00000004", CheckpointStore(dir).latest()!!.name)
    }

    @Test
    fun checkpointsOfAnotherRunAreRefused() {
        val dir = run()
        loop(dir, Log(), steps = 4).run()
        for ((what, build) in listOf<Pair<String, () -> TrainingLoop>>(
            "another bundle" to { loop(dir, Log(), bundle = "bundle-b") },
            "another seed" to { loop(dir, Log(), seed = 9) },
        )) {
            try {
                build().run()
                fail("$what resumed")
            } catch (e: CheckpointError) {
                assertTrue(what, e.message!!.contains(dir.path))
            }
        }
        try {
            loop(dir, Log()).run(resume = false)
            fail("a fresh run over checkpoints started")
        } catch (e: CheckpointError) {
            assertTrue(e.message!!.contains("already holds checkpoints"))
        }
    }

    @Test
    fun aHalfWrittenCheckpointIsIgnored() {
        val dir = run()
        loop(dir, Log(), steps = 4).run()
        val store = CheckpointStore(dir)
        File(store.root, "${CheckpointStore.TMP}00000008-1").mkdirs() // killed while writing
        File(store.root, "${CheckpointStore.PREFIX}00000009").mkdirs() // no meta.json: never committed
        assertEquals("ckpt-00000004", store.latest()!!.name)
        val result = loop(dir, Log(), steps = 6).run()
        assertEquals(4, result.resumedFrom)
        assertTrue(store.root.listFiles()!!.none { it.name.startsWith(CheckpointStore.TMP) })
    }

    @Test
    fun optionsAreChecked() {
        for (bad in listOf({ TrainOptions(0) }, { TrainOptions(5, checkpointEvery = 0) }, { TrainOptions(5, maxBadSteps = -1) })) {
            try {
                bad()
                fail("accepted")
            } catch (e: ConfigError) {
                assertTrue(e.message!!.contains("expected"))
            }
        }
    }
}
