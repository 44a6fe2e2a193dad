// Versions are the ones this demo was written against; not resolved or built here (see README.md).
plugins {
    id("com.android.application") version "8.5.2" apply false
    // Kotlin 2.0: the core's sources are compiled here with -language-version 2.0 (core/run_tests.sh).
    id("org.jetbrains.kotlin.android") version "2.0.21" apply false
    id("org.jetbrains.kotlin.jvm") version "2.0.21" apply false
}
