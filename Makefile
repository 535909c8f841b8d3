# Slipway developer entry points. `make demo` and `make test` work from a clean clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .tools/bin
DEMO_DIR ?= runs/demo
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install demo test test-slow test-flaky lint format check tools bench clean

# torch first, alone and pinned (a CPU build of exactly this version is served locally), then the project.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/slipway run quickstart --output $(DEMO_DIR)

tools: $(TOOLS)/helm $(TOOLS)/kubectl $(TOOLS)/promtool

$(TOOLS)/helm $(TOOLS)/kubectl $(TOOLS)/promtool:
	bash scripts/install-tools.sh $(TOOLS)

test: install tools
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest

test-slow: install tools
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest -m slow

# Rerun the tests marked `stochastic` (timing, scheduling, float order) N times; fails unless all pass every time.
# Narrow it with pytest arguments: `make test-flaky N=20 ARGS='-k overload'`.
N ?= 5
ARGS ?=
test-flaky: install tools
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) scripts/flaky.py --rounds $(N) -- $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy sdk/slipway
	$(PY) scripts/lint_imports.py

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate everything generated (golden pipeline YAML, constraints check), then fail on any diff.
check: install
	$(PY) tests/goldens.py
	$(PY) -m pip check
	@git status --porcelain --untracked-files=all -- tests/pipelines/golden constraints.txt | tee /dev/stderr | (! grep -q .)

bench: install
	$(PY) -m benchmarks.compression --output docs

clean:
	rm -rf $(VENV) .tools runs
