"""DATABASE_URL=postgres://…: the site migrates and serves on PostgreSQL (API keys, audit log)."""

import json
import subprocess
import sys
import uuid

import psycopg
import pytest

from .conftest import REPO, site_env
from .test_http_api import api_send

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_url():
    """A fresh database on the local PostgreSQL (trust auth), dropped afterwards."""
    name = f"relay_e2e_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{POSTGRES}/test", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.fail(f"No PostgreSQL answers at {POSTGRES} ({exc}); this test needs one.", pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES}/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_the_site_runs_on_postgresql(start_server, postgres_url, connect, uid):
    env = {"DATABASE_URL": postgres_url}
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO,
        env=site_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    server = start_server(name="postgres", env=env)
    key = subprocess.run(
        [sys.executable, "manage.py", "relay_apikey", "create", "postgres-test"],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert key.returncode == 0, key.stderr
    client = await connect(server, uid("pg"))
    response = await api_send(server, key.stdout.strip(), {"targets": [client.client_id], "payload": "on postgres"})
    answer = {"targets": 1, "offsets": {client.client_id: 1}}  # a send-only key is not told who was online
    assert (response.status, json.loads(response.body)) == (202, answer)
    assert await client.recv_json() == "on postgres"
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT source, targets FROM relay_admin_auditentry").fetchall() == [
            ("api", [client.client_id])
        ]
