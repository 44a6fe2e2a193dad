import Foundation

/// On-device rank re-allocation for `hydra-rank` bundles (runtime/realloc.py `Reallocator`): the
/// core's `Reallocation` decision fed with the runtime's own gradients and the performance model
/// the bundle ships.
///
/// Signals are `Realloc.rankSignal` over each slot's active (first `rank`) ranks; the tensors of a
/// slot are found by their recorded roles (down `[r_max, fan_in]`, up `[out, r_max]`), never by
/// name. Growing a slot re-initialises its new rows/columns as LoRA does (`growInit`: down rows
/// uniform in `±1/sqrt(fan_in)`, up columns zero), drawn from numpy's `default_rng([seed, step])`
/// in unit order, so a resumed run grows the same values as an uninterrupted one.
public final class Reallocator {
    public let policy: Reallocation
    public let budget: Int
    public let seed: Int
    public let signals = RankSignals()
    private let pairs: [String: [String: Trainable]]

    public init(_ schedule: RankSchedule, model: JSONObject?, trainable: [Trainable], every: Int, totalSteps: Int, seed: Int = 0) throws {
        policy = try Reallocation(model, units: schedule.units(), budget: schedule.budgetParams, every: every, totalSteps: totalSteps)
        budget = schedule.budgetParams
        self.seed = seed
        var pairs: [String: [String: Trainable]] = [:]
        for t in trainable { pairs[Units.key(t.module, t.slot), default: [:]][t.role] = t }
        self.pairs = pairs
    }

    public func state() -> JSON { signals.state() }

    public func loadState(_ state: JSONObject) throws { try signals.loadState(state) }

    /// One step's signal of every unit with an active rank.
    public func observe(_ grads: [String: [Float]], _ ranks: Ranks) throws {
        for (unit, n) in try Units.fromRanks(ranks, policy.units.keys) where n != 0 {
            let down = try tensor(unit, Contract.roleDown)
            let up = try tensor(unit, Contract.roleUp)
            let rMax = down.shape[0]
            func grad(_ t: Trainable) throws -> [Float] {
                guard let g = grads[t.name] else {
                    throw ConfigError("the trainer gave no gradient for \(t.name) (unit \(unit)); on-device re-allocation needs every slot's down and up gradients.")
                }
                return g
            }
            signals.observe(unit, try Realloc.rankSignal(try grad(down), try grad(up), rMax, (0..<rMax).map { $0 < n }))
        }
    }

    public func due(_ step: Int) -> Bool { policy.due(step) }

    public func decide(_ step: Int, _ ranks: Ranks) throws -> Decision {
        try policy.decide(step, try Units.fromRanks(ranks, policy.units.keys), signals.signals())
    }

    /// Fresh LoRA init of the newly activated rows/columns of `params` (in place); the new ranks by module.
    public func grow(_ params: inout [String: [Float]], _ decision: Decision) throws -> Ranks {
        let rng = NumpyRandom.of(seed, decision.step)
        for (unit, ab) in decision.changed() {
            let (a, b) = (ab[0], ab[1])
            if b <= a { continue }
            let downT = try tensor(unit, Contract.roleDown)
            let upT = try tensor(unit, Contract.roleUp)
            guard var down = params[downT.name] else { throw ConfigError("the trainer has no tensor \(downT.name) to grow") }
            guard var up = params[upT.name] else { throw ConfigError("the trainer has no tensor \(upT.name) to grow") }
            let fanIn = downT.shape[1]
            let fresh = Reallocator.growInit(rng, b - a, fanIn)
            down.replaceSubrange((a * fanIn)..<(a * fanIn + fresh.count), with: fresh)
            let rMax = upT.shape[1]
            for o in 0..<upT.shape[0] { for c in a..<b { up[o * rMax + c] = 0 } }
            params[downT.name] = down
            params[upT.name] = up
        }
        return Units.toRanks(decision.ranks)
    }

    private func tensor(_ unit: String, _ role: String) throws -> Trainable {
        guard let t = pairs[unit]?[role] else {
            throw ConfigError("the manifest has no \(role) tensor for unit \(unit); on-device re-allocation needs both roles of every slot.")
        }
        return t
    }

    /// `grow_init`: `[rows, fanIn]` uniform in `±1/sqrt(fanIn)` (doubles, then float32), row-major.
    public static func growInit(_ rng: NumpyRandom, _ rows: Int, _ fanIn: Int) -> [Float] {
        let bound = 1.0 / Double(fanIn).squareRoot()
        return (0..<(rows * fanIn)).map { _ in Float(rng.uniform(-bound, bound)) }
    }
}
