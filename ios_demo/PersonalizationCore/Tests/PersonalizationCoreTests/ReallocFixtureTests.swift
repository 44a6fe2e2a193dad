import Foundation
import XCTest
@testable import PersonalizationCore

/// The performance model, the allocation search and the re-allocation decision against fixtures/realloc.json.
final class ReallocFixtureTests: XCTestCase {
    var fx = JSONObject()
    var units = OrderedDict<UnitInfo>()
    var signals: [String: Double] = [:]
    var model = JSONObject()
    var budget = 0

    override func setUpWithError() throws {
        fx = try Fixtures.json("realloc.json")
        units = OrderedDict(fx["units"]!.obj.pairs.map { u, v in
            (u, UnitInfo(rMax: v[Contract.SlotKey.rMax]!.i, paramsPerRank: v[Contract.SlotKey.paramsPerRank]!.i))
        })
        signals = fx["signals"]!.doubleMap
        model = fx["model"]!.obj
        budget = fx["budget"]!.i
    }

    func testFeaturesUtilitiesAndPredictions() throws {
        let f = fx["features"]!.obj
        let phi = PerfModel.features(f["ranks"]!.intMap, signals, units)
        for (i, v) in f["values"]!.doubles.enumerated() { assertClose(v, phi[i], "feature \(PerfModel.featureList[i])") }
        let u = try PerfModel.unitUtilities(model, signals, units)
        for (unit, v) in fx["utilities"]!.obj { assertClose(v.d, u[unit]!, "utility of \(unit)") }
        for p in fx["predicted"]!.list {
            assertClose(p["loss"]!.d, try PerfModel.predictLoss(model, p["ranks"]!.intMap, signals, units), "predicted loss")
        }
    }

    func testProposedAllocations() throws {
        for case let .object(c) in fx["proposed"]!.list {
            let got = try PerfModel.proposeAllocation(signals, model, units, c["budget"]!.i, minRank: c["min_rank"]!.i)
            XCTAssertEqual(c["ranks"]!.intMap, got.dictionary, "budget \(c["budget"]!.i), min_rank \(c["min_rank"]!.i)")
        }
    }

    func testProposedAllocationsOnTwoSlotsPerModule() throws {
        let slots = fx["proposed_slots"]!.obj
        let hydraUnits = OrderedDict(slots["units"]!.obj.pairs.map { u, v in
            (u, UnitInfo(rMax: v[Contract.SlotKey.rMax]!.i, paramsPerRank: v[Contract.SlotKey.paramsPerRank]!.i))
        })
        let hydraSignals = slots["signals"]!.doubleMap
        for case let .object(c) in slots["cases"]!.list {
            let got = try PerfModel.proposeAllocation(hydraSignals, model, hydraUnits, c["budget"]!.i, minRank: c["min_rank"]!.i)
            XCTAssertEqual(c["ranks"]!.intMap, got.dictionary, "two slots, budget \(c["budget"]!.i), min_rank \(c["min_rank"]!.i)")
        }
    }

    func testDueAndDecisions() throws {
        let due = fx["due"]!.obj
        let r = try Reallocation(model, units: units, budget: budget, every: due["every"]!.i, totalSteps: due["total_steps"]!.i)
        XCTAssertEqual(due["steps"]!.ints, (0...due["total_steps"]!.i).filter { r.due($0) })
        let d = fx["decision"]!.obj
        let decision = try r.decide(d["step"]!.i, d["ranks"]!.orderedIntMap, signals)
        assertEvent(d["event"]!.obj, decision.event(budget))
        XCTAssertEqual(d["ranks_after"]!.intMap, decision.ranks.dictionary)
        let k = fx["kept"]!.obj
        let kept = try Reallocation(model, units: units, budget: budget, every: 5, totalSteps: 20, minGain: k["min_gain"]!.d)
            .decide(k["step"]!.i, d["ranks"]!.orderedIntMap, signals)
        assertEvent(k["event"]!.obj, kept.event(budget))
    }

    private func assertEvent(_ expected: JSONObject, _ actual: JSONObject) {
        XCTAssertEqual(expected.keys, actual.keys)
        for (k, v) in expected {
            if case .double(let x) = v {
                assertClose(x, actual[k]?.number ?? .nan, "event \(k)")
            } else {
                XCTAssertEqual(Json.dumps(v), Json.dumps(actual[k] ?? .null), "event \(k)")
            }
        }
    }

    func testRankSignalsAndTheirAverage() throws {
        for case let .object(c) in fx["rank_signal"]!.list {
            let active = c["active"]!.list.map { $0.bool! }
            let got = try Realloc.rankSignal(c["down"]!.floats, c["up"]!.floats, c["down_shape"]!.ints[0], active)
            assertClose(c["signal"]!.d, got, "rank_signal")
        }
        let e = fx["ema"]!.obj
        let ema = RankSignals()
        for o in e["observed"]!.list { ema.observe(o[0]!.str, o[1]!.d) }
        for (u, v) in e["signals"]!.obj { assertClose(v.d, ema.signals()[u]!, "EMA of \(u)") }
    }
}
