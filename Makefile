# make run   - set up .venv and serve the relay on 127.0.0.1:8000 (SQLite, in-memory layer, DEBUG on)
# make test  - set up .venv and run the whole test suite (needs the Redis at REDIS_URL)
# make bench - the load benchmark: relay vs a raw ASGI floor under daphne, with Redis
# make soak  - 2,000 clients for 10 minutes at a steady rate against one relay process: 0 loss, flat RSS
# make test-latest - the tests that depend on daphne's internals, on the newest releases pyproject.toml allows

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

.PHONY: run test test-latest lint bench soak venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: venv
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(VENV)/bin/daphne $(DAPHNE_FLAGS) -b $(HOST) -p $(PORT) relayproject.asgi:application

test: venv
	@$(PY) -c "import redis, sys; redis.Redis.from_url('$(REDIS_URL)', socket_connect_timeout=2).ping()" 2>/dev/null \
	  || { echo "make test: no Redis answers at REDIS_URL=$(REDIS_URL). Start one (redis-server) or set REDIS_URL." >&2; exit 1; }
	REDIS_URL=$(REDIS_URL) $(PY) -m pytest

# Daphne's internals are reached for slow clients, close codes and the drain
# (relay/server/daphne.py): run those tests on the newest Django, channels, channels-redis,
# daphne, Twisted and autobahn that pyproject.toml allows, so a new release that breaks
# them shows up here before it reaches a site.
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON_LATEST) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e .
	$(LATEST_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(django|channels|channels[-_]redis|daphne|twisted|autobahn) '
	REDIS_URL=$(REDIS_URL) $(LATEST_VENV)/bin/python -m pytest -m daphne_internals

lint: venv
	$(VENV)/bin/ruff check relay relayproject bench tests examples
	$(VENV)/bin/ruff format --check relay relayproject bench tests examples
	$(VENV)/bin/mypy

bench: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/run.py

soak: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/soak.py

clean:
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache
