// The phone's logic in plain Kotlin: no Android and no runtime-library dependency, so it builds and
// its tests run on any JVM (`gradle :core:test`, or without Gradle: `bash core/run_tests.sh`).
plugins {
    kotlin("jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // The golden fixtures written by the SDK (tests/demo_apps/make_fixtures.py).
    systemProperty("mobilepeft.fixtures", rootDir.resolve("../tests/demo_apps/fixtures").absolutePath)
}
