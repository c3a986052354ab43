# The two commands of the README: `make demo` (install + run the pipeline on the
# embedded default) and `make test` (install + run the tests). Both create .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench-cpu clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m extractor.demo

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) var
