# nirlink: `make demo` and `make test` work on a fresh machine (Python 3.11 with venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
DEMO_PERSONS ?= 20000
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench-synth clean venv browser

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/nirlink synth --persons $(DEMO_PERSONS) --out $(DEMO_DIR)/data --overwrite --write-job $(DEMO_DIR)/job.toml --job-output $(DEMO_DIR)/job
	$(BIN)/nirlink run $(DEMO_DIR)/job.toml --restart

# Debian's chromium and its driver, for the test that opens the HTML reports in a real browser
# (tests/test_report.py). Installed with apt-get (through sudo when not root); a failed install
# stops here, loudly, rather than leaving that test to fail later.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else \
	    echo "make browser: Debian's chromium and chromium-driver are needed; run as root or install sudo" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi
	chromium --version
	chromedriver --version

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed browser
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench-synth: $(VENV)/.installed
	$(BIN)/python -m benchmarks.synth

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
