"""relay as an installable app: build the wheel, install it into a fresh venv next to an
existing site (``tests/siteproject``, wired exactly as the README says), and relay.

Runs on Python 3.11 with Django 5.2 LTS and on Python 3.13 with the newest Django 6.x.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from .conftest import REPO, free_port

SITE = REPO / "tests" / "siteproject"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"

#: What a checkout may hold that is not source: left out of the copy the wheel is built from.
BUILD_LEFTOVERS = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "results",
    "*.sqlite3",
    "node_modules",
)

COMBINATIONS = [
    pytest.param("3.11", "Django>=5.2,<5.3", id="py3.11-django5.2"),
    pytest.param("3.13", "Django>=6,<7", id="py3.13-django6"),
]


def find_python(version: str) -> str:
    """The interpreter for ``version``: under pyenv (whose shims may refuse), or on PATH as pythonX.Y."""
    found = next(iter(sorted(PYENV.glob(f"{version}*/bin/python{version}"))), None) or shutil.which(f"python{version}")
    if found is None:
        pytest.fail(f"Python {version} is needed for this test and was not found (PATH or {PYENV}).", pytrace=False)
    return str(found)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The relay wheel built from a clean copy of this checkout.

    Built from a copy: setuptools reuses a ``build/`` directory, so files moved or
    deleted since an earlier build would still be in the wheel.
    """
    source = tmp_path_factory.mktemp("source") / "relay"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("django_relay-*.whl")
    return built


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.parametrize(("python_version", "django"), COMBINATIONS)
def test_wheel_installs_into_an_existing_site_and_relays(wheel, tmp_path, python_version, django):
    venv = tmp_path / "venv"
    run([find_python(python_version), "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", f"{wheel}", django])

    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "REDIS", "RELAY", "PYTHON"))}
    # The wheel's relay, not this checkout's: the site directory holds no relay package.
    where = run([python, "-c", "import relay, django; print(relay.__file__, django.VERSION[0])"], cwd=site, env=env)
    relay_file, django_major = where.stdout.split()
    assert relay_file.startswith(str(venv)), relay_file
    assert django_major == ("5" if django.startswith("Django>=5") else "6")
    run([python, "manage.py", "migrate", "--noinput"], cwd=site, env=env)
    run([python, "manage.py", "check", "--fail-level", "WARNING"], cwd=site, env=env)
    api_key = run([python, "manage.py", "relay_apikey", "create", "site-test"], cwd=site, env=env).stdout.strip()

    port = free_port()
    server = subprocess.Popen(
        [venv / "bin" / "daphne", "-b", "127.0.0.1", "-p", str(port), "siteproject.asgi:application"],
        cwd=site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        url = f"ws://127.0.0.1:{port}/ws?id="
        with (
            connect(url + "alice", proxy=None) as alice,
            connect(url + "bob", subprotocols=["relay.v1"], proxy=None) as bob,
        ):
            alice.send(json.dumps({"targets": ["bob"], "payload": {"hello": "from the wheel"}}))
            delivered = json.loads(bob.recv(timeout=5))
            assert delivered == {"type": "message", "from": "alice", "payload": {"hello": "from the wheel"}}

            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/relay/api/send",
                data=json.dumps({"targets": ["alice"], "payload": [1, 2]}).encode(),
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert (response.status, json.loads(response.read())) == (
                    202,
                    {"targets": 1, "online": 1, "offsets": {}},
                )
            assert alice.recv(timeout=5) == "[1,2]"
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0].decode(errors="replace")
    assert "Traceback" not in output, output


def wait_for_port(port: int, timeout: float = 20) -> None:
    """Wait until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
