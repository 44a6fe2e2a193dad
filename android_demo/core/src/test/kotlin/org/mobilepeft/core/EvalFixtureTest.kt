package org.mobilepeft.core

import org.junit.Assert.assertEquals
import org.junit.Test

/** Exact-match accuracy against fixtures/eval.json (runtime.evaluate.correct_answers). */
class EvalFixtureTest {
    @Test
    fun correctAnswersAreTheRuntimes() {
        val fx = Fixtures.json("eval.json")
        val (b, t, _) = fx["shape"].ints()
        val got = Evaluate.correctAnswers(fx["logits"].floats(), fx["labels"].longs().toLongArray(), b, t)
        assertEquals(fx["correct"].list(), got.toList())
    }
}
