PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: install test demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=24"
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/cspine demo

lint: install
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PY) bench/decode.py
	$(PY) bench/synth.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
