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
	$(BIN)/nirlink synth --persons $(DEMO_PERSONS) --out $(DEMO_DIR)/data --overwrite
	$(BIN)/nirlink aggregate --synthetic $(DEMO_DIR)/data --out $(DEMO_DIR)/aggregate
	@echo
	@echo "synthetic datasets: $(DEMO_DIR)/data/{register,career,resource,truth}"
	@echo "aggregates:         $(DEMO_DIR)/aggregate/{career_person_year,career_person,resource_person_month,resource_person_year,resource_person_review}"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench-synth: $(VENV)/.installed
	$(BIN)/python -m benchmarks.synth

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
