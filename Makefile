# The README's commands: `make reproduce` (set up + tiny reproduction), `make test` and `make lab` (JupyterLab
# on notebooks/). Each creates the virtual environment first if it is missing or older than pyproject.toml,
# with the notebooks' kernel registered inside it (share/jupyter/kernels/hyperllama, not the user's home).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_STAMP := $(VENV)/.installed-lab
# e.g. `make lab LAB_ARGS="--no-browser --port 8899"`
LAB_ARGS ?=
SCALE ?= tiny
JOBS ?= 2

.PHONY: reproduce test env lab

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m hyperllama_lib.jupyter_kernel
	touch $(STAMP)

$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,lab]'
	touch $(LAB_STAMP)

env: $(STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/hyperllama lab $(LAB_ARGS)

reproduce: $(STAMP)
	$(VENV)/bin/hyperllama reproduce --scale $(SCALE) --jobs $(JOBS)

# two worker processes, each taking whole test files (the grid tests start notebook kernels of their own)
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile
