# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing and install the pinned dependencies (constraints.txt) into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench reliability clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, by exact version: a CPU wheel of it is on the build machines' disk.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mobile-peft demo --out demo_out

test: $(STAMP)
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
