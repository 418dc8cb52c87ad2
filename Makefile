# Filecast developer commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
TOOLS ?= $(CURDIR)/.tools
AZURITE_VERSION ?= 3.37.0
PY := $(VENV)/bin/python
export FILECAST_TOOLS := $(TOOLS)

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed $(TOOLS)/node_modules/.bin/azurite

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(TOOLS)/node_modules/.bin/azurite:
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-save --no-package-lock --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(TOOLS) .demo
