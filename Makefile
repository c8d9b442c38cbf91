# `make run` and `make test` are all a new user needs: Python 3.11+ and make, no root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint tools clean help

help:
	@echo "make run    start the gateway (embedded Redis; the simulator unless GATEWAY_UPSTREAM_API_KEY is set)"
	@echo "make test   run the whole test suite"
	@echo "make bench  run the benchmark (a few minutes)"
	@echo "make lint   ruff, and mypy --strict over gateway/"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway serve --demo-key

tools: $(STAMP)
	@bash scripts/fetch-prometheus.sh

# The console's tests drive Debian's chromium (Playwright's own browser download needs internet
# access): without it, stop at once with the command that installs it rather than skip them.
test: $(STAMP) tools
	@command -v chromium >/dev/null 2>&1 || { echo "make test: the console's browser tests need chromium; install it with: sudo apt-get install -y chromium" >&2; exit 1; }
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy --strict gateway

clean:
	rm -rf $(VENV) var .tools .pytest_cache
