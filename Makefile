# make run   - set up .venv and serve the relay on 127.0.0.1:8000 (SQLite, in-memory layer, DEBUG on)
# make test  - set up .venv and run the whole test suite (needs the Redis at REDIS_URL)
# make bench - the load benchmark: relay vs a raw ASGI floor under daphne, with Redis
# make soak  - 2,000 clients for 10 minutes at a steady rate against one relay process: 0 loss, flat RSS

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REDIS_URL ?= redis://127.0.0.1:6379/0
HOST ?= 127.0.0.1
PORT ?= 8000
# No idle cut-off (daphne's default closes every socket after a day), and frames over
# 128 KiB (twice RELAY_MAX_MESSAGE_BYTES) refused by daphne before they are buffered.
DAPHNE_FLAGS ?= --websocket_timeout -1 --websocket-max-message-size 131072 --websocket-max-frame-size 131072

.PHONY: run test lint bench soak venv clean

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

lint: venv
	$(VENV)/bin/ruff check relay relayproject bench tests
	$(VENV)/bin/ruff format --check relay relayproject bench tests

bench: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/run.py

soak: venv
	REDIS_URL=$(REDIS_URL) $(PY) bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache
