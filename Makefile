# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: this machine class has a local CPU build of exactly this version, and any
# looser spec installed before it would pull the CUDA build (gigabytes).
TORCH ?= torch==2.13.0
# the suite on every core (pytest-xdist): 996 tests in 227 s instead of 411 s on 2 cores
PYTEST_ARGS ?= -n auto

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/pairless demo --overwrite  # `make demo` again replaces the previous demo's report

test: $(VENV)/.test-installed
	@# dciodvfy (Debian's dicom3tools) checks the DICOM series in tests/sim; without apt or root that test skips
	@command -v dciodvfy >/dev/null || (command -v apt-get >/dev/null \
		&& apt-get install -y -q dicom3tools >/dev/null 2>&1) || true
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) pairless-demo .pytest_cache
