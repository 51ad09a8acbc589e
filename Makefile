# Quick start:  make demo   (pipeline end to end on the embedded default)
#               make test   (the test suite against a real broker and real chdb)
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spendstream needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spendstream demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -rs

clean:
	rm -rf $(VENV) spendstream-data .pytest_cache
