# The two commands: `make run` (set up and serve) and `make test` (set up and pass the tests).
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint venv migrate clean bench browser

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (python3.11+ not found on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## run: virtual env, dependencies, instance secrets, migrations, then gunicorn on 127.0.0.1:$(PORT)
run: venv
	$(BIN)/registry init
	$(BIN)/registry migrate
	$(BIN)/gunicorn --config gunicorn.conf.py --bind 127.0.0.1:$(PORT) wsgi:app

migrate: venv
	$(BIN)/registry migrate

## lint: ruff (lint + format check) and mypy --strict
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## browser: Debian's Chromium and a CJK font for the browser tests (Playwright never
## downloads a browser here; without the font the zh-CN screenshots show empty boxes)
browser:
	@{ command -v chromium && fc-list :lang=zh | grep -q .; } >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-zenhei)

## test: lint, then the whole suite on SQLite and PostgreSQL (started here when installed but down)
test: venv browser
	@bash scripts/ensure-postgres.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

## bench: short benchmarks (a few minutes) -> bench/results/short.{json,png}; FULL=1 for the full run
bench: venv
	@bash scripts/ensure-postgres.sh || echo "PostgreSQL unavailable: only SQLite is benchmarked"
	$(BIN)/python -m bench.run $(if $(FULL),--full,)

## soak: the long forms of the security and reliability suites on SQLite and PostgreSQL
## (schemathesis with 100 examples per operation in both modes, six SIGKILLs over ~650
## reports, a minute of load); SOAK=1 selects them, the p99 figures are printed
.PHONY: soak
soak: venv
	@bash scripts/ensure-postgres.sh
	SOAK=1 $(BIN)/pytest tests/security tests/reliability

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
