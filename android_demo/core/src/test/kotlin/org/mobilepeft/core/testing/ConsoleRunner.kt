package org.mobilepeft.core.testing

import kotlin.system.exitProcess
import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener

/**
 * Runs the JUnit 4 classes named on the command line and ends with one line `N passed, N failed`
 * (android_demo/core/run_tests.sh and CI parse it); the exit status is 1 when anything failed.
 */
fun main(args: Array<String>) {
    var passed = 0
    var failed = 0
    val failures = mutableListOf<Failure>()
    val core = JUnitCore()
    core.addListener(object : RunListener() {
        private var current: Description? = null
        private var ok = true

        override fun testStarted(description: Description) {
            current = description
            ok = true
        }

        override fun testFailure(failure: Failure) {
            ok = false
            failures += failure
        }

        override fun testAssumptionFailure(failure: Failure) {
            ok = false
            failures += failure
        }

        override fun testFinished(description: Description) {
            if (ok) passed++ else failed++
        }
    })
    val classes = try {
        args.map { Class.forName(it) }
    } catch (e: Throwable) { // a missing or broken test class: one failure, still the parsed last line
        println("FAILED loading test classes: $e")
        println("0 passed, 1 failed")
        exitProcess(1)
    }
    val result = core.run(*classes.toTypedArray())
    for (f in failures) {
        println("FAILED ${f.description.displayName}")
        println("  " + (f.message ?: f.exception.toString()).replace("\n", "\n  "))
        f.exception.stackTrace.firstOrNull { it.className.startsWith("org.mobilepeft") }?.let { println("  at $it") }
    }
    // A class that fails to initialise reports a failure without a test: count it too.
    failed = maxOf(failed, result.failureCount)
    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
