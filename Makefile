# Two entry points, each sets itself up on first use:
#   make demo   -> virtual environment + demo on the built-in synthetic corpus
#   make test   -> virtual environment + the whole test suite (what CI runs)
#   make lint   -> ruff format --check and ruff check (SpeechBrain's style)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m speechbrain_mrmha demo --output demo_output

test: $(STAMP)
	$(PY) -m pytest -q --durations=30

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/pooling.py

clean:
	rm -rf $(VENV) demo_output
