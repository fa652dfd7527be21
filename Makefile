# The two set-up commands of the README:
#   make demo  — create .venv, install the runtime, run the demo (generated scene, no data to fetch)
#   make test  — create .venv, install everything the tests need (torch CPU, Brevitas, finn-plus),
#                run the whole test suite (what CI runs)
# and for the inner loop:
#   make test-quick — the same install, the tests not marked slow, stopping at the first failure
PYTHON ?= python3
VENV   := .venv
PIP    := $(VENV)/bin/pip
# torch first, pinned, so pip takes the local CPU wheel instead of the CUDA build (docs/references.md §6).
TORCH  := torch==2.13.0
FINN   := finn-plus==1.6.1

.PHONY: demo test test-quick lint bench clean

demo: $(VENV)/.runtime
	$(VENV)/bin/sarvessel demo

test: $(VENV)/.dev
	$(VENV)/bin/pytest

test-quick: $(VENV)/.dev
	$(VENV)/bin/pytest -m "not slow" -x -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests scripts

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# runtime only: what the board and the demo need
$(VENV)/.runtime: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e .
	touch $@

# everything: host tools (train, quantize, hw) and test tools, with finn-plus's exact pins
$(VENV)/.dev: pyproject.toml requirements/hw.txt | $(VENV)/bin/python
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -r requirements/hw.txt
	$(PIP) install -q --no-deps $(FINN)
	sed 's/\[[^]]*\]//' requirements/hw.txt > $(VENV)/constraints.txt  # pip: no extras in -c
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[train,hw,dev,archive]"
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info
