# Jiefen: `make help` lists every chore.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
# Test files run in parallel workers, each with its own databases and Redis channels.
TEST_WORKERS ?= 2

.PHONY: help run test lint typecheck audit format check messages migration clean

help: ## List the chores
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP) ## Migrate SQLite, seed the demo data and serve http://127.0.0.1:8000
	$(BIN)/jiefen db upgrade
	$(BIN)/jiefen demo
	$(BIN)/jiefen serve --host $(HOST) --port $(PORT)

test: $(STAMP) ## Run the whole test suite (PostgreSQL, Redis, Chromium tests skip when absent, outside CI)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

audit: $(STAMP) ## Known vulnerabilities in the installed packages (pip-audit)
	$(BIN)/pip-audit --skip-editable --progress-spinner off --desc

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint typecheck test ## Lint, type-check and test

messages: $(STAMP) ## Extract translatable strings and update the zh_CN catalogue
	$(BIN)/pybabel extract -F babel.cfg -k _l -k _ --ignore-dirs=".* __pycache__ var node_modules" -o portal/locale/messages.pot --no-location --sort-output --project=jiefen .
	$(BIN)/pybabel update -i portal/locale/messages.pot -d portal/locale -l zh_CN --no-fuzzy-matching --ignore-obsolete

migration: $(STAMP) ## Autogenerate a migration: make migration m="what changed"
	$(BIN)/alembic revision --autogenerate -m "$(m)"

clean: ## Remove the virtualenv and local data (var/)
	rm -rf $(VENV) var
