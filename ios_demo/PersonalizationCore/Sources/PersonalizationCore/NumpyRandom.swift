import Foundation

/// numpy's `np.random.default_rng(seed).permutation(n)`, bit for bit, so the phone draws the SDK's
/// data split (`load_folder`) and batch order (`DataStream`) from the same seed: `SeedSequence`
/// (numpy/random/bit_generator.pyx: hashmix/mix over a 4-word pool), `PCG64` (XSL-RR 128/64,
/// numpy's seeding `pcg_setseq_128_srandom_r`), `next_uint32` (halves of one 64-bit draw, low
/// first), `random_interval` (mask-and-reject) and `Generator.shuffle`'s Fisher-Yates from the end.
/// Also `random()` (`next_double`: the top 53 bits of one 64-bit draw) and `uniform(low, high)`
/// (`random_uniform`: `low + (high - low) * next_double`), for re-allocation's grow-init.
public final class NumpyRandom {
    private var hi: UInt64
    private var lo: UInt64
    private let incHi: UInt64
    private let incLo: UInt64
    private var hasUint32 = false
    private var uinteger: UInt64 = 0

    private static let mask32: UInt64 = 0xFFFF_FFFF
    private static let mulHi: UInt64 = 0x2360_ED05_1FC6_5DA4
    private static let mulLo: UInt64 = 0x4385_DF64_9FCC_F645
    private static let initA: UInt32 = 0x43b0_d7e5
    private static let multA: UInt32 = 0x931e_8875
    private static let initB: UInt32 = 0x8b51_f9dd
    private static let multB: UInt32 = 0x58f3_8ded
    private static let mixMultL: UInt32 = 0xca01_f9dd
    private static let mixMultR: UInt32 = 0x4973_f715
    private static let poolSize = 4

    private init(hi: UInt64, lo: UInt64, incHi: UInt64, incLo: UInt64) {
        self.hi = hi
        self.lo = lo
        self.incHi = incHi
        self.incLo = incLo
    }

    /// `pcg64_next64`: step, then the XSL-RR output of the new state.
    public func nextUInt64() -> UInt64 {
        step()
        let x = hi ^ lo
        let rot = hi >> 58
        return (x >> rot) | (x << ((64 - rot) & 63))
    }

    /// `pcg64_next32`.
    public func nextUInt32() -> UInt64 {
        if hasUint32 {
            hasUint32 = false
            return uinteger
        }
        let next = nextUInt64()
        hasUint32 = true
        uinteger = next >> 32
        return next & NumpyRandom.mask32
    }

    /// `next_double`: uniform in [0, 1) from the top 53 bits of one 64-bit draw (the uint32 buffer untouched).
    public func random() -> Double { Double(nextUInt64() >> 11) * (1.0 / 9007199254740992.0) }

    /// `Generator.uniform(low, high)` for scalar bounds: `low + (high - low) * random()`.
    public func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * random() }

    /// `random_interval(max)`: uniform in 0...max by masking and rejecting.
    public func interval(_ max: UInt64) -> UInt64 {
        if max == 0 { return 0 }
        var mask = max
        for shift: UInt64 in [1, 2, 4, 8, 16, 32] { mask |= mask >> shift }
        while true {
            let value = max <= NumpyRandom.mask32 ? nextUInt32() & mask : nextUInt64() & mask
            if value <= max { return value }
        }
    }

    /// `permutation(n)`: 0..<n shuffled.
    public func permutation(_ n: Int) -> [Int] {
        var a = Array(0..<n)
        var i = n - 1
        while i >= 1 {
            let j = Int(interval(UInt64(i)))
            a.swapAt(i, j)
            i -= 1
        }
        return a
    }

    private func step() {
        // state = state * MULTIPLIER + inc  (mod 2^128)
        let (pHiLo, pLo) = lo.multipliedFullWidth(by: NumpyRandom.mulLo)
        let pHi = pHiLo &+ lo &* NumpyRandom.mulHi &+ hi &* NumpyRandom.mulLo
        let (sLo, carry) = pLo.addingReportingOverflow(incLo)
        hi = pHi &+ incHi &+ (carry ? 1 : 0)
        lo = sLo
    }

    /// `default_rng(seed)`, or `default_rng([a, b, ...])` (the data stream's `[seed, epoch]`).
    public static func of(_ seeds: Int...) -> NumpyRandom { of(seeds) }

    public static func of(_ seeds: [Int]) -> NumpyRandom {
        precondition(seeds.allSatisfy { $0 >= 0 }, "numpy seeds must be non-negative, got \(seeds)")
        return fromEntropy(seeds.flatMap(words))
    }

    /// A non-negative integer as little-endian 32-bit words (`_int_to_uint32_array`).
    private static func words(_ n: Int) -> [UInt32] {
        if n == 0 { return [0] }
        var out: [UInt32] = []
        var v = UInt64(n)
        while v > 0 {
            out.append(UInt32(v & mask32))
            v >>= 32
        }
        return out
    }

    private static func fromEntropy(_ entropy: [UInt32]) -> NumpyRandom {
        let pool = seedPool(entropy)
        let state = generateState64(pool, 4)
        // pcg64_set_seed: seed = (state[0] << 64) | state[1], inc = (state[2] << 64) | state[3]
        let incHi = (state[2] << 1) | (state[3] >> 63)
        let incLo = (state[3] << 1) | 1
        let rng = NumpyRandom(hi: 0, lo: 0, incHi: incHi, incLo: incLo)
        rng.step()
        let (lo, carry) = rng.lo.addingReportingOverflow(state[1])
        rng.hi = rng.hi &+ state[0] &+ (carry ? 1 : 0)
        rng.lo = lo
        rng.step()
        return rng
    }

    /// `SeedSequence(entropy).pool` (`mix_entropy` over the assembled entropy).
    private static func seedPool(_ entropy: [UInt32]) -> [UInt32] {
        var hashConst = initA
        func hashmix(_ value: UInt32) -> UInt32 {
            var v = value ^ hashConst
            hashConst = hashConst &* multA
            v = v &* hashConst
            return v ^ (v >> 16)
        }
        func mix(_ x: UInt32, _ y: UInt32) -> UInt32 {
            let r = (mixMultL &* x) &- (mixMultR &* y)
            return r ^ (r >> 16)
        }
        var pool = (0..<poolSize).map { hashmix($0 < entropy.count ? entropy[$0] : 0) }
        for src in 0..<poolSize {
            for dst in 0..<poolSize where src != dst { pool[dst] = mix(pool[dst], hashmix(pool[src])) }
        }
        if entropy.count > poolSize {
            for src in poolSize..<entropy.count {
                for dst in 0..<poolSize { pool[dst] = mix(pool[dst], hashmix(entropy[src])) }
            }
        }
        return pool
    }

    /// `generate_state(n, np.uint64)`: 2n uint32 words, paired little-endian.
    private static func generateState64(_ pool: [UInt32], _ n: Int) -> [UInt64] {
        var hashConst = initB
        let words: [UInt32] = (0..<(2 * n)).map { i in
            var v = pool[i % poolSize] ^ hashConst
            hashConst = hashConst &* multB
            v = v &* hashConst
            return v ^ (v >> 16)
        }
        return (0..<n).map { UInt64(words[2 * $0]) | (UInt64(words[2 * $0 + 1]) << 32) }
    }
}
