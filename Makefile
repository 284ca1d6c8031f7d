# make run   - set up .venv and serve the relay on 127.0.0.1:8000 (SQLite, in-memory layer, DEBUG on)
# make test  - set up .venv and run the whole test suite (needs Redis, PostgreSQL, Python 3.11 and 3.13,
#              Node.js/npm, and Debian's chromium, which it installs when missing: see "What make test needs")
# make bench - the load benchmark: relay vs a raw ASGI floor under daphne and uvicorn, with Redis
# make bench-scale - one process holding as many idle connections as its fd limit allows
# make bench-storm - a reconnect storm: two relay processes on one port, SIGTERM the one holding the clients
# make churn - 1,000 clients dropping and resuming at random for 60 s under steady load: 0 lost, 0 doubled
# make soak  - 2,000 clients for 10 minutes at a steady rate against one relay process: 0 loss, flat RSS
# make test-latest - the tests that depend on daphne's or uvicorn's internals, on the newest releases pyproject.toml allows

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# test-latest: the newest Python here (Django 6 needs 3.12+), in a venv of its own.
PYTHON_LATEST ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13))),python3.13)
LATEST_VENV := .venv-latest
REDIS_URL ?= redis://127.0.0.1:6379/0
HOST ?= 127.0.0.1
PORT ?= 8000
# No idle cut-off (daphne's default closes every socket after a day), and frames over
# 128 KiB (twice RELAY_MAX_MESSAGE_BYTES) refused by daphne before they are buffered.
DAPHNE_FLAGS ?= --websocket_timeout -1 --websocket-max-message-size 131072 --websocket-max-frame-size 131072

# What make test needs besides .venv; each is checked before any test runs, and a missing
# one fails with a message (the tests fail rather than skip):
# - Redis at REDIS_URL (the end-to-end tests);
# - PostgreSQL at POSTGRES_URL, trust auth, with a database "test" (tests/e2e/test_postgres.py);
# - Python 3.11 and 3.13, under pyenv or on PATH (tests/e2e/test_install.py: fresh venvs of both);
# - Node.js and npm: `npm ci` installs TypeScript (package.json), which checks relay.d.ts;
# - chromium: Debian's, driven by Playwright (requirements-dev.txt) in the browser tests;
#   installed with apt-get when missing (Playwright's own browser download is not used).
POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test test-latest lint bench bench-scale bench-storm churn soak venv chromium clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: venv
	DEBUG=$${DEBUG:-1} RELAY_EXAMPLES=$${RELAY_EXAMPLES:-1} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} RELAY_EXAMPLES=$${RELAY_EXAMPLES:-1} $(VENV)/bin/daphne $(DAPHNE_FLAGS) -b $(HOST) -p $(PORT) relayproject.asgi:application

test: venv node_modules/.installed chromium
	@$(PY) -c "import redis, sys; redis.Redis.from_url('$(REDIS_URL)', socket_connect_timeout=2).ping()" 2>/dev/null \
	  || { echo "make test: no Redis answers at REDIS_URL=$(REDIS_URL). Start one (redis-server) or set REDIS_URL." >&2; exit 1; }
	@$(PY) -c "import psycopg; psycopg.connect('$(POSTGRES_URL)', connect_timeout=3).close()" 2>/dev/null \
	  || { echo "make test: no PostgreSQL answers at $(POSTGRES_URL) (tests/e2e/test_postgres.py needs one, trust auth)." >&2; exit 1; }
	@for version in 3.11 3.13; do \
	  ls $(HOME)/.pyenv/versions/$$version*/bin/python$$version >/dev/null 2>&1 || command -v python$$version >/dev/null \
	  || { echo "make test: Python $$version is needed (tests/e2e/test_install.py makes a fresh venv of it): pyenv install $$version, or put python$$version on PATH." >&2; exit 1; }; \
	done
	REDIS_URL=$(REDIS_URL) $(PY) -m pytest

# Debian's chromium for the browser tests (tests/e2e/browser.py), installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "make test: installing Debian's chromium for the browser tests (apt-get install -y chromium)" >&2; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; } \
	  && command -v chromium >/dev/null 2>&1 \
	  || { echo "make test: chromium is needed for the browser tests: apt-get install -y chromium" >&2; exit 1; }

# TypeScript, which checks relay/static/relay/relay.d.ts (tests/e2e/test_relay_js.py).
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 \
	  || { echo "make test: npm is needed (TypeScript checks relay.d.ts): install Node.js 20 or later." >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Daphne's and uvicorn's internals are reached for slow clients, close codes, peers and the
# drain (relay/server/daphne.py, relay/server/uvicorn.py): run those tests on the newest
# Django, channels, channels-redis, daphne, Twisted, autobahn, uvicorn and websockets that
# pyproject.toml allows, so a new release that breaks them shows up here before it reaches a site.
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON_LATEST) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[client,uvicorn]"
	$(LATEST_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(django|channels|channels[-_]redis|daphne|twisted|autobahn|uvicorn|websockets) '
	REDIS_URL=$(REDIS_URL) $(LATEST_VENV)/bin/python -m pytest -m server_internals

lint: venv
	$(VENV)/bin/ruff check relay relayproject bench tests examples
	$(VENV)/bin/ruff format --check relay relayproject bench tests examples
	$(VENV)/bin/mypy

bench: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/run.py
	# Two relay processes on one Redis, then on two Redis shards (servers of the benchmark's own).
	$(PY) bench/run.py --servers uvicorn --targets relay --modes closed --processes 2 --shards 2
	REDIS_URL=$(REDIS_URL) $(PY) bench/churn.py

# Not in make bench: each takes minutes (bench/README.md).
bench-scale: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/run.py --targets floor relay --modes scale

bench-storm: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/storm.py

churn: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/churn.py

soak: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/soak.py

clean:
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache node_modules tests/e2e/artifacts
