# One-command entry points.  `make run` installs and starts the service (embedded
# PostgreSQL, no Redis needed); `make test` installs and runs the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
NPM    ?= npm
# npm ci writes node_modules/.package-lock.json; its postinstall copies the
# socket.io-client bundle into chat_server/web/vendor/ for the demo page.
NPM_STAMP = node_modules/.package-lock.json

.PHONY: install test-deps run test migrate lint token clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	@if command -v $(NPM) >/dev/null 2>&1; then \
	  $(NPM) ci --no-audit --no-fund --loglevel=error; \
	else \
	  echo "warning: npm not found: the demo page needs socket.io-client from npm, and the JavaScript and browser tests need Node.js" >&2; \
	fi

install: $(STAMP) $(NPM_STAMP)

run: install
	$(BIN)/chat-server run

# System packages the tests drive (Chromium, nginx, redis-server, Node.js): installed
# with apt when missing and running as root, otherwise named.
test-deps:
	@bash scripts/install-test-deps.sh

test: test-deps install
	$(BIN)/pytest

migrate: install
	$(BIN)/chat-server migrate

lint: install
	$(BIN)/ruff check chat_server tests
	$(BIN)/mypy

token: install
	@$(BIN)/chat-server token --sub $${SUB:-alice} --name $${NAME:-Alice} --role $${ROLE:-user}

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache node_modules chat_server/web/vendor benchmarks/node_modules

# Benchmarks (benchmarks/run.py, README "Benchmarks"): our server against a reference
# Socket.IO server on Node.js, one load generator for both.  `make bench` runs the quick
# profile (a few minutes), `make bench-full` (or `make bench BENCH_PROFILE=full`) the full
# one.  Needs the PostgreSQL and Redis that `make test` uses, Node.js with npm, and taskset.
BENCH_NPM_STAMP = benchmarks/node_modules/.package-lock.json
.PHONY: bench bench-full

$(BENCH_NPM_STAMP): benchmarks/package.json benchmarks/package-lock.json
	cd benchmarks && $(NPM) ci --no-audit --no-fund --loglevel=error

bench: $(STAMP) $(BENCH_NPM_STAMP)
	$(BIN)/python benchmarks/run.py --profile $(or $(BENCH_PROFILE),quick)

bench-full: $(STAMP) $(BENCH_NPM_STAMP)
	$(BIN)/python benchmarks/run.py --profile full
