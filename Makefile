# One-command entry points.  `make run` installs and starts the service (embedded
# PostgreSQL, no Redis needed); `make test` installs and runs the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install run test migrate lint token clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/chat-server run

test: install
	$(BIN)/pytest

migrate: install
	$(BIN)/chat-server migrate

lint: install
	$(BIN)/ruff check chat_server tests
	$(BIN)/mypy

token: install
	@$(BIN)/chat-server token --sub $${SUB:-alice} --name $${NAME:-Alice} --role $${ROLE:-user}

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
