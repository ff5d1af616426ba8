# The README's two commands: `make reproduce` (set up + tiny reproduction) and `make test`.
# Both create the virtual environment first if it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCALE ?= tiny
JOBS ?= 2

.PHONY: reproduce test env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

env: $(STAMP)

reproduce: $(STAMP)
	$(VENV)/bin/hyperllama reproduce --scale $(SCALE) --jobs $(JOBS)

# two worker processes, each taking whole test files (the grid tests start notebook kernels of their own)
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile
