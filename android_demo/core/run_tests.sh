#!/usr/bin/env bash
# Compile the pure-Kotlin core (android_demo/core) and run its JUnit tests on the JVM, without
# Gradle or an Android SDK. The last line printed is always `N passed, N failed`; the exit status
# is non-zero when anything failed (a compile error counts as one failure).
#
#   bash android_demo/core/run_tests.sh
#
# Needs Java 17+, the Kotlin compiler from PyPI (kotlin-jupyter-kernel, pip-installed into the
# repository's .venv when missing) and JUnit 4 + hamcrest (Debian's junit4 package, apt-installed
# when missing and running as root). Outputs go to android_demo/core/build/jvm (git-ignored):
# compiled jars are reused while the sources are unchanged, and a class-data-sharing archive of
# the compiler halves its start-up after the first run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/build/jvm"
KOTLIN_PIP="kotlin-jupyter-kernel==0.19.0.944"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
JUNIT_DIR="${JUNIT_DIR:-/usr/share/java}"
FIXTURES="$ROOT/tests/demo_apps/fixtures"
START=$(date +%s%N)
mkdir -p "$OUT"

fail() { # message; the parsed last line counts the failure
    echo "run_tests.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

# -- toolchain -------------------------------------------------------------------------------------
command -v java >/dev/null || fail "java not found; install a JDK 17 (Debian: apt-get install -y openjdk-17-jdk-headless)"
JAVA_MAJOR=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
[ "${JAVA_MAJOR%%.*}" -ge 17 ] 2>/dev/null || fail "Java $JAVA_MAJOR found; Java 17 or newer is needed"
[ -x "$PYTHON" ] || fail "no Python at $PYTHON (run \`make install\`, or set PYTHON=...)"

kotlin_jars() {
    "$PYTHON" - <<'EOF' 2>/dev/null
import os, run_kotlin_kernel
print(os.path.join(os.path.dirname(run_kotlin_kernel.__file__), "jars"))
EOF
}
JARS="$(kotlin_jars || true)"
if [ -z "$JARS" ] || ! ls "$JARS"/kotlin-jupyter-kernel-*-all.jar >/dev/null 2>&1; then
    echo "run_tests.sh: installing the Kotlin compiler ($KOTLIN_PIP) into $(dirname "$(dirname "$PYTHON")")" >&2
    "$PYTHON" -m pip install --quiet "$KOTLIN_PIP" >&2 || fail "pip install $KOTLIN_PIP failed"
    JARS="$(kotlin_jars)" || fail "run_kotlin_kernel is not importable after installing $KOTLIN_PIP"
fi
one() { # the single jar matching a glob in $JARS
    local match
    match=$(ls "$JARS"/$1 2>/dev/null | head -n 1)
    [ -n "$match" ] || fail "no $1 in $JARS"
    echo "$match"
}
COMPILER="$(one 'kotlin-jupyter-kernel-*-all.jar')"
STDLIB="$(one 'kotlin-stdlib-[0-9]*.jar')"
COMPILER_CP="$COMPILER:$STDLIB:$(one 'kotlin-reflect-*.jar'):$(one 'kotlin-script-runtime-*.jar'):$(one 'annotations-*.jar')"

if [ ! -f "$JUNIT_DIR/junit4.jar" ] || [ ! -f "$JUNIT_DIR/hamcrest-core.jar" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "run_tests.sh: installing JUnit 4 (apt-get install junit4)" >&2
        { apt-get install -y -qq junit4 || { apt-get update -qq && apt-get install -y -qq junit4; }; } >/dev/null 2>&1 \
            || fail "apt-get install junit4 failed"
    else
        fail "JUnit 4 not found in $JUNIT_DIR; install Debian's junit4 package (or set JUNIT_DIR)"
    fi
fi
JUNIT="$JUNIT_DIR/junit4.jar:$JUNIT_DIR/hamcrest-core.jar"

# -- compile ---------------------------------------------------------------------------------------
# C1 only and a class-data-sharing archive: the compiler's run is dominated by start-up (2 CPUs: 24 s -> 6 s).
CDS="$OUT/kotlinc-$(echo "$COMPILER_CP" | sha256sum | cut -c1-12).jsa" # per compiler: a stale archive is never reused
JVM_FLAGS=(-XX:TieredStopAtLevel=1 -Xss8m -Xlog:cds=off -Xlog:class+path=off)
if [ -f "$CDS" ]; then JVM_FLAGS+=(-XX:SharedArchiveFile="$CDS"); else JVM_FLAGS+=(-XX:ArchiveClassesAtExit="$CDS"); fi
KOTLINC_FLAGS=(-no-stdlib -no-reflect -jvm-target 17 -language-version 2.0 -api-version 2.0 -Xsuppress-version-warnings)

digest() { # what a jar is built from: the compiler, what it depends on, its sources
    { echo "$COMPILER"; echo "$1"; shift; cat "$@"; } | sha256sum | cut -d' ' -f1
}
compile() { # jar, classpath, dependency digest, sources...
    local jar="$1" cp="$2" deps="$3"
    shift 3
    local sum
    sum="$(digest "$deps" "$@")"
    if [ -f "$jar" ] && [ "$(cat "$jar.sha256" 2>/dev/null)" = "$sum" ]; then return 0; fi
    rm -f "$jar" "$jar.sha256"
    if ! java "${JVM_FLAGS[@]}" -cp "$COMPILER_CP" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler \
        "${KOTLINC_FLAGS[@]}" -cp "$cp" -d "$jar" "$@" >&2; then
        fail "compiling $(basename "$jar" .jar) failed"
    fi
    echo "$sum" > "$jar.sha256"
    # Once written, the archive is reused (a second ArchiveClassesAtExit would rewrite it).
    JVM_FLAGS=("${JVM_FLAGS[@]/-XX:ArchiveClassesAtExit=*/-XX:SharedArchiveFile=$CDS}")
}
mapfile -t MAIN_SOURCES < <(find "$HERE/src/main/kotlin" -name '*.kt' | sort)
mapfile -t TEST_SOURCES < <(find "$HERE/src/test/kotlin" -name '*.kt' | sort)
# The core compiles against the Kotlin standard library alone: no Android, no runtime library.
compile "$OUT/core.jar" "$STDLIB" "" "${MAIN_SOURCES[@]}"
compile "$OUT/core-tests.jar" "$STDLIB:$OUT/core.jar:$JUNIT" "$(cat "$OUT/core.jar.sha256")" "${TEST_SOURCES[@]}"
COMPILED=$(date +%s%N)

# -- run -------------------------------------------------------------------------------------------
CLASSES=()
for f in "${TEST_SOURCES[@]}"; do
    name="$(basename "$f" .kt)"
    [[ "$name" == *Test ]] && CLASSES+=("org.mobilepeft.core.$name")
done
echo "run_tests.sh: toolchain + compile $(( (COMPILED - START) / 1000000 )) ms; running ${#CLASSES[@]} test classes" >&2
java -XX:TieredStopAtLevel=1 -Dmobilepeft.fixtures="$FIXTURES" \
    -cp "$OUT/core-tests.jar:$OUT/core.jar:$STDLIB:$JUNIT" \
    org.mobilepeft.core.testing.ConsoleRunnerKt "${CLASSES[@]}"
