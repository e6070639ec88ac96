# The two commands a newcomer needs: `make devnet` and `make test`.
# Each creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
PIP_CONSTRAINT := -c constraints.txt
# Tests run on both cores; override with `make test PYTEST_ARGS=...`.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: devnet test lint typecheck clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml constraints.txt
	$(PIP) install $(PIP_CONSTRAINT) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install $(PIP_CONSTRAINT) -e '.[test]'
	touch $@

devnet: $(VENV)/.installed
	$(PY) -m node.devnet $(DEVNET_ARGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check chain consensus pouw p2p wallet node store benchmarks tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check chain consensus pouw p2p wallet node store benchmarks tests

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
