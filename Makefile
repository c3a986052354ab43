# The two commands of the README: `make demo` (install + run the pipeline on the
# embedded default) and `make test` (install + run the tests). Both create .venv with the
# runtime and the development requirements (the image installs requirements.txt only).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench-cpu clean
.PHONY: browser-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c requirements-lock.txt  # runtime + test tools
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m extractor.demo

test: install lint
	$(PY) -m pytest

lint: install  # a lint error fails `make test`, so CI
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var

# The real-browser tests (tests/browser) drive Debian's chromium through chromium-driver:
# installed when missing (root, or sudo), a no-op when present; the tests skip, saying
# so, only where they cannot be installed.
test: browser-deps
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $$( [ "$$(id -u)" = 0 ] || echo sudo ) sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver' \
	  || echo "browser-deps: chromium / chromium-driver could not be installed; tests/browser will skip"; }
