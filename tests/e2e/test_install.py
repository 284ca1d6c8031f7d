"""relay as an installable app: build the wheel, install it into a fresh venv next to an
existing site, and relay; a logged-in user's browser connects on the first try.

``tests/siteproject`` is ``django-admin startproject siteproject`` (Django 5.2) plus the
README's lines of "Add relay to your Django site" and nothing else: the first test checks
that against a project generated now. Runs on Python 3.11 with Django 5.2 LTS and on
Python 3.13 with the newest Django 6.x, under daphne and under ``manage.py runserver``.
"""

import difflib
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


#: The README's "The JavaScript client" recipe, as run in a page of the site by a logged-in user.
README_JS = """\
const { RelayClient } = await import("/static/relay/relay.js")
const relay = new RelayClient()  // the page's session: the logged-in user connects as str(user.pk)
relay.on("message", (m) => console.log("got", JSON.stringify(m.payload), "from", m.from, "offset", m.offset))
relay.on("reconnecting", ({ delay, code }) => console.log(`lost (${code}), reconnecting in ${delay} ms`))
relay.on("recovered", ({ recovered, reason }) => recovered || console.log("not recovered:", reason))
await relay.open()
const sent = await relay.send(["1"], { hello: "me" })  // the user's own id: settles on the relay's ack
console.log("sent", JSON.stringify(sent))
"""

#: What the README's "Add relay to your Django site" adds to a new project, file by file:
#: the test below finds exactly these lines added to what startproject generates.
README_ADDITIONS = {
    "siteproject/settings.py": [
        '    "daphne",  # first: manage.py runserver is then daphne\'s, which serves WebSockets too',
        '    "channels",',
        '    "relay",',
        '    "relay.contrib.http_api",  # optional: the HTTP API (/relay/api/) and its API keys',
        '    "relay.contrib.admin",  # optional: admin pages to push and see who is online, the audit log',
        "",
        'ASGI_APPLICATION = "siteproject.asgi.application"',
        "# One process (runserver, or one daphne): the in-memory layer. Several: Redis (see the README).",
        'CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}',
    ],
    "siteproject/asgi.py": [
        "",
        "# relay: the site's HTTP (static files too under DEBUG, as runserver serves them) and the relay's WebSockets.",
        "from channels.routing import ProtocolTypeRouter  # noqa: E402  (after Django is set up, above)",
        "from django.conf import settings  # noqa: E402",
        "from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402",
        "",
        "from relay.routing import relay_http_application, relay_websocket_application  # noqa: E402",
        "",
        "http_application = ASGIStaticFilesHandler(application) if settings.DEBUG else application",
        "application = ProtocolTypeRouter(",
        "    {",
        '        "http": relay_http_application(http_application),',
        '        "websocket": relay_websocket_application(),',
        "    }",
        ")",
    ],
    "siteproject/urls.py": ['    path("relay/", include("relay.urls")),'],
}
#: Lines that differ between two runs of startproject: the random key, the patch release.
GENERATED_DIFFERENTLY = ("SECRET_KEY = 'django-insecure-", "Generated by 'django-admin startproject' using Django ")
#: Generated lines the README changes.
README_CHANGES = {
    "from django.urls import path": "from django.urls import include, path",
}


def test_the_site_is_startproject_plus_the_readme_lines(tmp_path):
    subprocess.run(
        [Path(sys.executable).parent / "django-admin", "startproject", "siteproject"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    generated = tmp_path / "siteproject"
    files = sorted(str(path.relative_to(generated)) for path in generated.rglob("*") if path.is_file())
    assert files == sorted(
        str(path.relative_to(SITE)) for path in SITE.rglob("*") if path.is_file() and "__pycache__" not in path.parts
    )
    for name in files:
        fresh, ours = (generated / name).read_text().splitlines(), (SITE / name).read_text().splitlines()
        added = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, fresh, ours, autojunk=False).get_opcodes():
            if op == "insert":
                added += ours[j1:j2]
            elif op == "replace":
                for old, new in zip(fresh[i1:i2], ours[j1:j2], strict=True):
                    allowed = README_CHANGES.get(old) == new or any(
                        old.startswith(random) and new.startswith(random) for random in GENERATED_DIFFERENTLY
                    )
                    assert allowed, f"{name}: {old!r} became {new!r}"
            else:
                assert op == "equal", f"{name}: generated lines removed: {fresh[i1:i2]}"
        assert added == README_ADDITIONS.get(name, []), name


@pytest.mark.parametrize(("python_version", "django"), COMBINATIONS)
def test_wheel_installs_into_an_existing_site_and_relays(wheel, tmp_path, browser, python_version, django):
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
    superuser = {"DJANGO_SUPERUSER_USERNAME": "admin", "DJANGO_SUPERUSER_PASSWORD": "relay-site-password"}
    run(
        [python, "manage.py", "createsuperuser", "--noinput", "--email", "admin@example.com"],
        cwd=site,
        env={**env, **superuser},
    )

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
        relays_and_pushes(port, api_key)
        serves_static_files(port)
        a_logged_in_user_connects_on_the_first_try(browser, port, superuser)
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0].decode(errors="replace")
    assert "Traceback" not in output, output

    # With daphne first in INSTALLED_APPS, runserver is daphne's: WebSockets and static files too.
    port = free_port()
    runserver = subprocess.Popen(
        [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        with connect(f"ws://127.0.0.1:{port}/ws?id=carol", subprotocols=["relay.v1"], proxy=None) as carol:
            carol.send(json.dumps({"targets": ["carol"], "payload": "via runserver", "id": 1}))
            assert json.loads(carol.recv(timeout=5)) == {"type": "message", "from": "carol", "payload": "via runserver"}
        serves_static_files(port)
    finally:
        runserver.terminate()
        output = runserver.communicate(timeout=10)[0].decode(errors="replace")
    assert "Traceback" not in output, output


def relays_and_pushes(port: int, api_key: str) -> None:
    """A message between two ?id= clients (DEBUG is on), and a push through the HTTP API."""
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
                {"targets": 1, "offsets": {}},  # a send-only key is not told who was online
            )
        assert alice.recv(timeout=5) == "[1,2]"


def serves_static_files(port: int) -> None:
    """The admin's CSS (styled under daphne too) and relay.js, from the apps, under DEBUG."""
    for path, kind in (("/static/admin/css/base.css", "text/css"), ("/static/relay/relay.js", "javascript")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            assert response.status == 200, path
            assert kind in response.headers["Content-Type"], (path, response.headers["Content-Type"])


def a_logged_in_user_connects_on_the_first_try(browser, port: int, superuser: dict[str, str]) -> None:
    """Log in on the admin's page, then, in that page, import /static/relay/relay.js and connect with the session."""
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}/admin/login/?next=/admin/")
        page.fill("#id_username", superuser["DJANGO_SUPERUSER_USERNAME"])
        page.fill("#id_password", superuser["DJANGO_SUPERUSER_PASSWORD"])
        page.click("input[type=submit]")
        page.wait_for_url(f"http://127.0.0.1:{port}/admin/")
        result = page.evaluate(
            """async () => {
                const { RelayClient } = await import("/static/relay/relay.js");
                const relay = new RelayClient();            // no token, no id: the session cookie
                const events = [];
                for (const type of ["connecting", "open", "reconnecting", "closed", "recovered", "message"]) {
                    relay.on(type, (detail) => events.push(type));
                }
                const got = new Promise((resolve) => relay.on("message", resolve));
                await relay.open();
                const sent = await relay.send(["1"], { hello: "me" });   // the superuser is pk 1
                const message = await got;
                relay.close();
                return { events, sent, message };
            }"""
        )
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.evaluate("async () => {\n" + README_JS + "\n}")
        for _ in range(100):
            if len(console) >= 3:
                break
            page.wait_for_timeout(50)
        readme_js = console
    finally:
        page.close()
    assert result["events"][:2] == ["connecting", "open"], "connected on the first try"
    assert "reconnecting" not in result["events"]
    assert result["sent"] == {"offsets": {}, "forbidden": [], "unavailable": []}
    assert result["message"] == {"from": "1", "payload": {"hello": "me"}, "offset": None, "epoch": None}
    assert sorted(readme_js) == [
        'got {"hello":"me"} from 1 offset null',
        "not recovered: history_off",
        'sent {"offsets":{},"forbidden":[],"unavailable":[]}',
    ]


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
