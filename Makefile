# Setup and the usual runs: `make demo`, `make test` (the whole suite, what .ci/run calls), `make check`
# (the fast tier: no model zoos, not even the one-model-per-timm-family tier, no app subprocesses, a quarter of
# each property test's examples), `make lint`
# (ruff + the import-layer contracts).
# Every target creates or reuses .venv and installs from constraints.txt; the install is skipped when
# pyproject.toml and constraints.txt are unchanged since the last one (.venv/.install-stamp).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
# Test workers (pytest-xdist); each runs torch on one thread (tests/conftest.py). `make test JOBS=0` runs serially.
JOBS ?= 2
# The test runs keep bytecode (gitignored __pycache__/) even where the environment sets PYTHONDONTWRITEBYTECODE:
# without it every pytest worker recompiles foldconv and re-rewrites every test module's asserts (about 5 s each).
PYTEST := PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -p no:cacheprovider -n $(JOBS)

.PHONY: demo test check lint install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/sweep.py

test: $(STAMP)
	$(PYTEST)

check: $(STAMP)
	HYPOTHESIS_PROFILE=fast $(PYTEST) -m "not slow and not app and not zoo"

lint: $(STAMP)
	$(VENV)/bin/ruff check foldconv foldconv_launcher.py scripts tests benchmarks
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/table.py
	$(PY) benchmarks/fold_speed.py
	$(PY) benchmarks/receptive_field.py
	$(PY) benchmarks/count.py

clean:
	rm -rf outputs multirun .pytest_cache .hypothesis
