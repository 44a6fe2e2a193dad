package org.mobilepeft.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/** The performance model, the allocation search and the re-allocation decision against fixtures/realloc.json. */
class ReallocFixtureTest {
    private val fx = Fixtures.json("realloc.json")
    private val units: Map<String, UnitInfo> = LinkedHashMap<String, UnitInfo>().apply {
        for ((u, v) in fx["units"].obj()) put(u as String, UnitInfo(v.obj()[Contract.SlotKey.R_MAX].int(), v.obj()[Contract.SlotKey.PARAMS_PER_RANK].long()))
    }
    private val signals = fx["signals"].doubleMap()

    @Suppress("UNCHECKED_CAST")
    private val model = fx["model"] as Map<String, Any?>
    private val budget = fx["budget"].long()

    @Test
    fun featuresUtilitiesAndPredictions() {
        val f = fx["features"].obj()
        val phi = PerfModel.features(f["ranks"].intMap(), signals, units)
        f["values"].doubles().forEachIndexed { i, v -> assertClose(v, phi[i], "feature ${PerfModel.FEATURES[i]}") }
        val u = PerfModel.unitUtilities(model, signals, units)
        for ((unit, v) in fx["utilities"].obj()) assertClose(v.double(), u.getValue(unit as String), "utility of $unit")
        for (p in fx["predicted"].list()) {
            assertClose(p.obj()["loss"].double(), PerfModel.predictLoss(model, p.obj()["ranks"].intMap(), signals, units), "predicted loss")
        }
    }

    @Test
    fun proposedAllocations() {
        for (case in fx["proposed"].list()) {
            val c = case.obj()
            val got = PerfModel.proposeAllocation(signals, model, units, c["budget"].long(), c["min_rank"].int())
            assertEquals("budget ${c["budget"]}, min_rank ${c["min_rank"]}", c["ranks"].intMap(), got)
        }
    }

    @Test
    fun proposedAllocationsOnTwoSlotsPerModule() {
        val slots = fx["proposed_slots"].obj()
        val hydraUnits = LinkedHashMap<String, UnitInfo>().apply {
            for ((u, v) in slots["units"].obj()) put(u as String, UnitInfo(v.obj()[Contract.SlotKey.R_MAX].int(), v.obj()[Contract.SlotKey.PARAMS_PER_RANK].long()))
        }
        val hydraSignals = slots["signals"].doubleMap()
        for (case in slots["cases"].list()) {
            val c = case.obj()
            val got = PerfModel.proposeAllocation(hydraSignals, model, hydraUnits, c["budget"].long(), c["min_rank"].int())
            assertEquals("two slots, budget ${c["budget"]}, min_rank ${c["min_rank"]}", c["ranks"].intMap(), got)
        }
    }

    @Test
    fun dueAndDecisions() {
        val due = fx["due"].obj()
        val r = Reallocation(model, units, budget, due["every"].int(), due["total_steps"].int())
        assertEquals(due["steps"].ints(), (0..due["total_steps"].int()).filter(r::due))
        val d = fx["decision"].obj()
        val decision = r.decide(d["step"].int(), d["ranks"].intMap(), signals)
        assertEvent(d["event"].obj(), decision.event(budget))
        assertEquals(d["ranks_after"].intMap(), decision.ranks)
        val k = fx["kept"].obj()
        val kept = Reallocation(model, units, budget, 5, 20, minGain = k["min_gain"].double()).decide(k["step"].int(), d["ranks"].intMap(), signals)
        assertEvent(k["event"].obj(), kept.event(budget))
    }

    @Test
    fun modelsOfAnotherKindOrVersionAreRefused() {
        for (case in fx["refused"].list()) {
            @Suppress("UNCHECKED_CAST")
            val bad = case.obj()["model"] as Map<String, Any?>
            val message = case.obj()["message"].str()
            for (attempt in listOf<() -> Unit>(
                { Reallocation(bad, units, budget, 5, 20) },
                { PerfModel.proposeAllocation(signals, bad, units, budget) },
            )) {
                try {
                    attempt()
                    throw AssertionError("model ${Json.dumps(bad)} was accepted")
                } catch (e: ConfigError) {
                    assertTrue("'${e.message}' lacks '$message'", e.message!!.contains(message))
                }
            }
        }
    }

    private fun assertEvent(expected: Map<*, *>, actual: Map<String, Any?>) {
        assertEquals(expected.keys.toList(), actual.keys.toList())
        for ((k, v) in expected) {
            val a = actual[k]
            if (v is Double) assertClose(v, (a as Number).toDouble(), "event $k") else assertEquals("event $k", Json.dumps(v), Json.dumps(a))
        }
    }

    @Test
    fun rankSignalsAndTheirAverage() {
        for (case in fx["rank_signal"].list()) {
            val c = case.obj()
            val active = c["active"].list().map { it as Boolean }.toBooleanArray()
            val got = Realloc.rankSignal(c["down"].floats(), c["up"].floats(), c["down_shape"].ints()[0], active)
            assertClose(c["signal"].double(), got, "rank_signal")
        }
        val e = fx["ema"].obj()
        val ema = RankSignals()
        for (o in e["observed"].list()) ema.observe(o.list()[0].str(), o.list()[1].double())
        for ((u, v) in e["signals"].obj()) assertClose(v.double(), ema.signals().getValue(u as String), "EMA of $u")
    }
}
