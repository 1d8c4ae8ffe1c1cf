# Two commands do all the setup: `make demo` and `make test`.
# Both create or reuse .venv and install from constraints.txt; the install is skipped when
# pyproject.toml and constraints.txt are unchanged since the last one (.venv/.install-stamp).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/sweep.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/layout.py
	$(PY) benchmarks/sweep.py
	$(PY) benchmarks/fold_speed.py
	$(PY) benchmarks/receptive_field.py
	$(PY) benchmarks/count.py

clean:
	rm -rf outputs multirun .pytest_cache .hypothesis
