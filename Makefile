# Two commands on a fresh machine: `make demo` and `make test`. Python 3.11 is all they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SERVERS := $(PY) -m devservers
# The slowest tests are listed in every run, so a CI log shows where the minutes go.
PYTEST_ARGS ?= --durations=25

.PHONY: venv test lint format demo loadtest chaos bench cluster up servers-start servers-stop servers-status clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	@touch $@

# ruff for style, import-linter for the layout's import rules, mypy for the types agent
# authors meet (all configured in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The test servers live apart from the ones `make up` and `make demo` use, so a test
# run never stops a stack somebody is looking at.
test: lint
	LOCAL_SERVERS_DIR=$(CURDIR)/.run/test $(SERVERS) run -- $(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev $(SERVERS) run -- \
		sh -c '$(PY) manage.py migrate --noinput -v 0 && $(PY) manage.py demo $(DEMO_ARGS)'

# Load, chaos and benchmark runs against the .run/dev servers, like the demo (BENCHMARKS.md).
# DEBUG off, as the workers and a production API run: with it on, Django formats and keeps
# every statement the load generator sends (a fifth of an order's placement), on the cores
# being measured.
loadtest chaos bench: venv
	DEBUG=false LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev $(SERVERS) run -- \
		sh -c '$(PY) manage.py migrate --noinput -v 0 && $(PY) manage.py $@ $(ARGS)'

# Worker hosts as network namespaces of this machine (needs root), on servers of their own that
# listen on the hosts' links for the run (BENCHMARKS.md, docs/scale-out.md).
cluster: venv
	@$(PY) -m orchestration.testing.netns check
	DEBUG=false LOCAL_SERVERS_DIR=$(CURDIR)/.run/cluster $(SERVERS) run -- \
		sh -c '$(PY) manage.py migrate --noinput -v 0 && $(PY) manage.py cluster $(ARGS)'

# Flower is never open: without FLOWER_BASIC_AUTH (user:password) this run gets a fresh password.
up: venv
	@if [ -z "$$FLOWER_BASIC_AUTH" ]; then \
		FLOWER_BASIC_AUTH="operator:$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(18))')"; \
		printf '\n    Flower  http://127.0.0.1:5555  user: operator  password: %s\n' "$${FLOWER_BASIC_AUTH#operator:}"; \
		printf '    (a new password each run; set FLOWER_BASIC_AUTH=user:password to choose one)\n'; \
		printf '    Admin   http://127.0.0.1:8000/admin/  user: operator\n\n'; \
	fi; \
	export FLOWER_BASIC_AUTH LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev; \
	export PROMETHEUS_MULTIPROC_DIR="$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/.run/dev/metrics}"; \
	rm -rf "$$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$$PROMETHEUS_MULTIPROC_DIR"; \
	exec $(SERVERS) run -- \
		sh -c '$(PY) manage.py migrate --noinput -v 0 && $(PY) manage.py ensure_operator && exec $(BIN)/honcho start -f Procfile'

servers-start: venv
	LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev $(SERVERS) start

servers-stop: venv
	LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev $(SERVERS) stop

servers-status: venv
	LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev $(SERVERS) status

clean:
	-LOCAL_SERVERS_DIR=$(CURDIR)/.run/dev $(SERVERS) stop
	-LOCAL_SERVERS_DIR=$(CURDIR)/.run/test $(SERVERS) stop
	-LOCAL_SERVERS_DIR=$(CURDIR)/.run/cluster $(SERVERS) stop
	rm -rf .run
