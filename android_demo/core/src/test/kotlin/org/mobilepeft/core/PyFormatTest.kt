package org.mobilepeft.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.fail
import org.junit.Test

/** The Python behaviours messages and files depend on (fixtures/pyformat.json, written by Python). */
class PyFormatTest {
    private val fx = Fixtures.json("pyformat.json")

    @Test
    fun floatReprIsPythons() {
        for (case in fx["floats"].list()) {
            val c = case.obj()
            assertEquals("repr of ${c["value"]}", c["repr"], Py.floatRepr(c["value"].double()))
        }
    }

    @Test
    fun stringReprIsPythons() {
        for (case in fx["strings"].list()) assertEquals(case.obj()["repr"], Py.repr(case.obj()["value"]))
    }

    @Test
    fun thousandsSeparators() {
        for (case in fx["grouped"].list()) assertEquals(case.obj()["text"], Py.grouped(case.obj()["value"].long()))
    }

    @Test
    fun dumpsIsPythons() {
        val d = fx["dumps"].obj()
        val value = d["value"]
        assertEquals(d["default"], Json.dumps(value))
        assertEquals(d["indent_sorted"], Json.dumps(value, indent = 2, sortKeys = true))
        assertEquals(d["compact"], Json.dumps(value, itemSeparator = ",", keySeparator = ":"))
    }

    @Test
    fun parseErrorsAreAtPythonsPositions() {
        for (case in fx["bad_json"].list()) {
            val c = case.obj()
            val text = c["text"].str()
            try {
                Json.parse(text)
                assertNull("Python refuses ${Py.repr(text)}", c["error"])
            } catch (e: JsonError) {
                assertEquals("error of ${Py.repr(text)}", c["error"], e.reason)
                assertEquals("line of ${Py.repr(text)}", c["line"].int(), e.line)
                assertEquals("column of ${Py.repr(text)}", c["column"].int(), e.column)
                assertEquals("position of ${Py.repr(text)}", c["position"].int(), e.position)
            }
        }
    }

    @Test
    fun acceptsWhatPythonAccepts() {
        for (case in fx["good_json"].list()) {
            val c = case.obj()
            val parsed = try {
                Json.parse(c["text"].str())
            } catch (e: JsonError) {
                fail("${Py.repr(c["text"])}: ${e.message}")
            }
            assertEquals(c["dumps"], Json.dumps(parsed))
        }
    }

    @Test
    fun stringOrderIsByCodePoint() {
        // U+FF5E sorts after U+1F642 by UTF-16 unit but before it by code point (Python's order).
        assertEquals(listOf("\uFF5E", "\uD83D\uDE42"), listOf("\uD83D\uDE42", "\uFF5E").sortedWith(Py.STRING_ORDER))
    }
}
