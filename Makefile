# Quick start:  make demo   (pipeline end to end on the embedded default)
#               make test   (the test suite against a real broker and real chdb)
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spendstream needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spendstream demo

test: $(STAMP) browser
	$(VENV)/bin/ruff check spendstream tests bench
	$(VENV)/bin/python -m pytest -rs --durations=15

# The report test renders the HTML report in headless Chromium (Debian's package).
# Installed when missing and we may (root with apt); otherwise that one test skips, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& echo "installing chromium for the report test" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the report rendering test will skip"

clean:
	rm -rf $(VENV) spendstream-data .pytest_cache
