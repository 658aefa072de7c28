# nirlink: `make demo` and `make test` work on a fresh machine (Python 3.11 with venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
DEMO_PERSONS ?= 20000
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench-synth clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/nirlink synth --persons $(DEMO_PERSONS) --out $(DEMO_DIR)/data --overwrite --write-job $(DEMO_DIR)/job.toml --job-output $(DEMO_DIR)/job
	$(BIN)/nirlink run $(DEMO_DIR)/job.toml --restart

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench-synth: $(VENV)/.installed
	$(BIN)/python -m benchmarks.synth

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
