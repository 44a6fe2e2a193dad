package org.mobilepeft.core

/**
 * numpy's `np.random.default_rng(seed).permutation(n)`, bit for bit, so the phone draws the SDK's
 * data split (`load_folder`) and batch order (`DataStream`) from the same seed: `SeedSequence`
 * (numpy/random/bit_generator.pyx: hashmix/mix over a 4-word pool), `PCG64` (XSL-RR 128/64,
 * numpy's seeding `pcg_setseq_128_srandom_r`), `next_uint32` (halves of one 64-bit draw, low
 * first), `random_interval` (mask-and-reject) and `Generator.shuffle`'s Fisher-Yates from the end.
 * tests/demo_apps/fixtures/split.json holds numpy's permutations for several seeds. Also
 * `random()` (`next_double`: the top 53 bits of one 64-bit draw) and `uniform(low, high)`
 * (`random_uniform`: `low + (high - low) * next_double`), for re-allocation's grow-init.
 */
class NumpyRandom private constructor(private var hi: Long, private var lo: Long, private val incHi: Long, private val incLo: Long) {
    private var hasUint32 = false
    private var uinteger = 0L

    /** `pcg64_next64`: step, then the XSL-RR output of the new state. */
    fun nextLong(): Long {
        step()
        return java.lang.Long.rotateRight(hi xor lo, (hi ushr 58).toInt())
    }

    /** `pcg64_next32` (unsigned, in a Long). */
    fun nextUInt32(): Long {
        if (hasUint32) {
            hasUint32 = false
            return uinteger
        }
        val next = nextLong()
        hasUint32 = true
        uinteger = next ushr 32
        return next and MASK32
    }

    /** `next_double`: uniform in [0, 1) from the top 53 bits of one 64-bit draw (the uint32 buffer untouched). */
    fun random(): Double = (nextLong() ushr 11) * (1.0 / 9007199254740992.0)

    /** `Generator.uniform(low, high)` for scalar bounds: `low + (high - low) * random()`. */
    fun uniform(low: Double, high: Double): Double = low + (high - low) * random()

    /** `random_interval(max)`: uniform in 0..max by masking and rejecting. */
    fun interval(max: Long): Long {
        if (max == 0L) return 0
        var mask = max
        for (shift in intArrayOf(1, 2, 4, 8, 16, 32)) mask = mask or (mask ushr shift)
        while (true) {
            val value = if (max <= MASK32) nextUInt32() and mask else nextLong() and mask
            if (value <= max) return value
        }
    }

    /** `permutation(n)`: 0..n-1 shuffled. */
    fun permutation(n: Int): IntArray {
        val a = IntArray(n) { it }
        for (i in n - 1 downTo 1) {
            val j = interval(i.toLong()).toInt()
            val t = a[i]
            a[i] = a[j]
            a[j] = t
        }
        return a
    }

    private fun step() {
        // state = state * MULTIPLIER + inc  (mod 2^128)
        val pLo = lo * MUL_LO
        val pHi = umulHigh(lo, MUL_LO) + lo * MUL_HI + hi * MUL_LO
        val sLo = pLo + incLo
        val carry = if (java.lang.Long.compareUnsigned(sLo, pLo) < 0) 1L else 0L
        hi = pHi + incHi + carry
        lo = sLo
    }

    companion object {
        private const val MASK32 = 0xFFFFFFFFL
        private const val MUL_HI = 0x2360ED051FC65DA4L
        private const val MUL_LO = 0x4385DF649FCCF645L
        private const val INIT_A = 0x43b0d7e5
        private const val MULT_A = 0x931e8875.toInt()
        private const val INIT_B = 0x8b51f9dd.toInt()
        private const val MULT_B = 0x58f38ded
        private const val MIX_MULT_L = 0xca01f9dd.toInt()
        private const val MIX_MULT_R = 0x4973f715
        private const val POOL_SIZE = 4

        /** `default_rng(seed)`, or `default_rng([a, b, ...])` (the data stream's `[seed, epoch]`). */
        fun of(vararg seeds: Long): NumpyRandom = fromEntropy(seeds.flatMap { words(it) })

        /** A non-negative integer as little-endian 32-bit words (`_int_to_uint32_array`). */
        private fun words(n: Long): List<Int> {
            require(n >= 0) { "numpy seeds must be non-negative, got $n" }
            if (n == 0L) return listOf(0)
            val out = ArrayList<Int>()
            var v = n
            while (v > 0) {
                out += (v and MASK32).toInt()
                v = v ushr 32
            }
            return out
        }

        private fun fromEntropy(entropy: List<Int>): NumpyRandom {
            val pool = seedPool(entropy)
            val state = generateState64(pool, 4)
            // pcg64_set_seed: seed = (state[0] << 64) | state[1], inc = (state[2] << 64) | state[3]
            val incHi = (state[2] shl 1) or (state[3] ushr 63)
            val incLo = (state[3] shl 1) or 1L
            val rng = NumpyRandom(0L, 0L, incHi, incLo)
            rng.step()
            val lo = rng.lo + state[1]
            val carry = if (java.lang.Long.compareUnsigned(lo, rng.lo) < 0) 1L else 0L
            rng.hi = rng.hi + state[0] + carry
            rng.lo = lo
            rng.step()
            return rng
        }

        /** `SeedSequence(entropy).pool` (`mix_entropy` over the assembled entropy). */
        private fun seedPool(entropy: List<Int>): IntArray {
            var hashConst = INIT_A
            fun hashmix(value: Int): Int {
                var v = value xor hashConst
                hashConst *= MULT_A
                v *= hashConst
                return v xor (v ushr 16)
            }
            fun mix(x: Int, y: Int): Int {
                val r = MIX_MULT_L * x - MIX_MULT_R * y
                return r xor (r ushr 16)
            }
            val pool = IntArray(POOL_SIZE) { hashmix(if (it < entropy.size) entropy[it] else 0) }
            for (src in 0 until POOL_SIZE) for (dst in 0 until POOL_SIZE) {
                if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src]))
            }
            for (src in POOL_SIZE until entropy.size) for (dst in 0 until POOL_SIZE) pool[dst] = mix(pool[dst], hashmix(entropy[src]))
            return pool
        }

        /** `generate_state(n, np.uint64)`: 2n uint32 words, paired little-endian. */
        private fun generateState64(pool: IntArray, n: Int): LongArray {
            var hashConst = INIT_B
            val words = IntArray(2 * n) { i ->
                var v = pool[i % POOL_SIZE] xor hashConst
                hashConst *= MULT_B
                v *= hashConst
                v xor (v ushr 16)
            }
            return LongArray(n) { (words[2 * it].toLong() and MASK32) or (words[2 * it + 1].toLong() shl 32) }
        }

        /** High 64 bits of the unsigned 128-bit product (no `Math.multiplyHigh` before Android 31). */
        private fun umulHigh(a: Long, b: Long): Long {
            val a0 = a and MASK32
            val a1 = a ushr 32
            val b0 = b and MASK32
            val b1 = b ushr 32
            val p01 = a0 * b1
            val p10 = a1 * b0
            val mid = ((a0 * b0) ushr 32) + (p01 and MASK32) + (p10 and MASK32)
            return a1 * b1 + (p01 ushr 32) + (p10 ushr 32) + (mid ushr 32)
        }
    }
}
