# `make run` and `make test` are all a new user needs: Python 3.11+ and make, no root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly what uv.lock pins; uv itself comes from PyPI at the version and hashes of
# scripts/uv-requirements.txt, into a folder of its own.
UV_HOME := .tools/uv
UV := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test bench lint lock-upgrade tools oidc-provider clean help

help:
	@echo "make run    start the gateway (embedded Redis; the simulator unless GATEWAY_UPSTREAM_API_KEY is set)"
	@echo "make test   run the whole test suite"
	@echo "make bench  run the benchmark (a few minutes)"
	@echo "make lint   the lock matches pyproject.toml, ruff, mypy --strict, the packages' layering (lint-imports)"
	@echo "make lock-upgrade   move uv.lock to the newest releases pyproject.toml allows (on purpose)"

$(UV): scripts/uv-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		-r scripts/uv-requirements.txt
	@touch $(UV)

$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra dev --python $(PYTHON) --quiet
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway serve --demo-key

tools: $(STAMP)
	@bash scripts/fetch-prometheus.sh

# The console's sign-in tests start a real OpenID provider (panva's oidc-provider, pinned by
# tests/oidc/package-lock.json) on Debian's Node: installed into tests/oidc/node_modules, no root.
OIDC_STAMP := tests/oidc/node_modules/.installed
$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make test: the sign-in tests need Node and npm; install them with: sudo apt-get install -y nodejs npm" >&2; exit 1; }
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
	@touch $(OIDC_STAMP)

oidc-provider: $(OIDC_STAMP)

# The console's tests drive Debian's chromium (Playwright's own browser download needs internet
# access): without it, stop at once with the command that installs it rather than skip them.
test: $(STAMP) tools $(OIDC_STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "make test: the console's browser tests need chromium; install it with: sudo apt-get install -y chromium" >&2; exit 1; }
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(UV) lock --check --offline --quiet || { echo "make lint: uv.lock does not match pyproject.toml; run: $(UV) lock" >&2; exit 1; }
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy --strict gateway
	$(BIN)/lint-imports --no-cache

# On purpose only (a release of a dependency is a change to review): every package to the newest
# release pyproject.toml allows, then `make lint test` and the container check before committing.
lock-upgrade: $(UV)
	$(UV) lock --upgrade

clean:
	rm -rf $(VENV) var .tools .pytest_cache tests/oidc/node_modules
