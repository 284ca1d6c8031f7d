"""deploy/: the nginx, systemd and sysctl configuration the README's "Deploy" shows carry the protections
daphne alone cannot give (issue 12): slowloris, bodies, connection and request limits, file descriptors."""

import re
from pathlib import Path

import pytest

from relay.conf import conf

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
#: What the README's "Sizing" and the units' comments say one process may hold.
CONNECTIONS_PER_PROCESS = 50_000


def nginx() -> str:
    return (DEPLOY / "nginx.conf").read_text()


def location(path: str) -> str:
    """The body of ``location <path> { ... }`` (no nested blocks in ours)."""
    match = re.search(r"location " + re.escape(path) + r" \{(.*?)\n    \}", nginx(), re.S)
    assert match, f"no location {path} in deploy/nginx.conf"
    return match.group(1)


def directive(text: str, name: str) -> list[str]:
    """The values of ``name`` in ``text``, comments left out."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return [m.group(1).strip() for line in lines if (m := re.match(r"\s*" + re.escape(name) + r"\s+([^;]*);", line))]


def seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value).groups()
    return int(number) * (60 if unit == "m" else 1)


def test_nginx_bounds_the_time_a_client_may_take_over_its_headers():
    """Slowloris: daphne holds a request whose headers trickle in a byte a minute, for ever."""
    (header_timeout,) = directive(nginx(), "client_header_timeout")
    (body_timeout,) = directive(nginx(), "client_body_timeout")
    assert seconds(header_timeout) <= 15 and seconds(body_timeout) <= 15


def test_nginx_limits_connections_and_handshakes_per_client_address():
    assert any("zone=relay_conn" in zone for zone in directive(nginx(), "limit_conn_zone"))
    (limit,) = directive(nginx(), "limit_conn")
    assert limit.startswith("relay_conn ")
    assert any("zone=relay_handshake" in limit for limit in directive(location("/ws"), "limit_req"))
    assert any("zone=relay_api" in limit for limit in directive(location("/relay/api/"), "limit_req"))


def test_nginx_refuses_api_bodies_over_the_relays_limit_before_daphne_reads_them():
    """Daphne reads a whole body (to a temporary file, then into memory) before any application code."""
    (size,) = directive(location("/relay/api/"), "client_max_body_size")
    assert size == f"{conf.RELAY_MAX_MESSAGE_BYTES // 1024}k"


@pytest.mark.parametrize("path", ["/ws", "/relay/api/", "/relay/metrics", "/"])
def test_nginx_names_the_client_in_a_header_no_client_can_write(path):
    assert directive(location(path), "proxy_set_header").count("X-Forwarded-For $remote_addr") == 1


def test_nginx_lets_prometheus_scrape_the_metrics_with_the_token():
    """The relay checks RELAY_METRICS_TOKEN itself: nginx passes /relay/metrics on, denying nothing."""
    assert directive(location("/relay/metrics"), "proxy_pass") == ["http://relay"]
    assert "deny" not in nginx()


def unit() -> str:
    return (DEPLOY / "relay@.service").read_text()


def test_the_unit_gives_daphne_a_file_descriptor_for_every_connection_it_claims():
    (limit,) = re.findall(r"^LimitNOFILE=(\d+)$", unit(), re.M)
    assert int(limit) >= CONNECTIONS_PER_PROCESS * 1.3  # room for Redis, the database, its own files


def test_the_unit_does_not_let_daphne_believe_any_x_forwarded_for():
    command = re.search(r"ExecStart=(.*?)\n(?!\s)", unit(), re.S).group(1)
    assert "--proxy-headers" not in command
    assert "--websocket_timeout -1" in command
    assert "--websocket-max-message-size 131072" in command and "--websocket-max-frame-size 131072" in command


def options_of(words: list[str]) -> dict[str, str | bool]:
    """``--flag value`` and bare ``--flag`` words as a dict (True for a bare flag)."""
    options: dict[str, str | bool] = {}
    for word, following in zip(words, [*words[1:], "--"], strict=True):
        if word.startswith("--"):
            options[word] = True if following.startswith("--") else following
    return options


def test_the_uvicorn_unit_runs_uvicorn_as_the_end_to_end_tests_do():
    from tests.e2e.conftest import UVICORN_FLAGS

    text = (DEPLOY / "relay-uvicorn@.service").read_text()
    words = re.search(r"ExecStart=(.*?)\n(?!\s)", text, re.S).group(1).replace("\\\n", " ").split()
    assert words[-1] == "relayproject.asgi:application"
    options = options_of(words[1:-1])
    assert options_of(list(UVICORN_FLAGS)).items() <= options.items()
    assert options["--ws-max-size"] == "131072" and options["--no-proxy-headers"] is True
    (limit,) = re.findall(r"^LimitNOFILE=(\d+)$", text, re.M)
    assert int(limit) >= CONNECTIONS_PER_PROCESS * 1.3  # room for Redis, the database, its own files
    # Everything else is the daphne unit's.
    same = [line for line in unit().splitlines() if not line.startswith(("#", "ExecStart", "    ", "Description"))]
    assert [line for line in same if line not in text.splitlines()] == []


def test_sysctl_bounds_what_the_kernel_holds_for_a_client_that_does_not_read():
    (value,) = re.findall(
        r"^net\.ipv4\.tcp_notsent_lowat\s*=\s*(\d+)$", (DEPLOY / "sysctl-relay.conf").read_text(), re.M
    )
    assert int(value) <= 256 * 1024


def readme_block(after: str, language: str) -> str:
    """The first ```language block of the README after the line that starts with ``after``."""
    readme = (DEPLOY.parent / "README.md").read_text()
    start = readme.index("\n" + after) + 1
    match = re.compile(r"```" + language + r"\n(.*?)```", re.S).search(readme, start)
    assert match, f"no ```{language} block after {after!r}"
    return match.group(1)


def without_comment_header(path: Path) -> str:
    """The file without its leading comment lines (where it goes, which the README says in prose)."""
    lines = path.read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    while lines and not lines[0].strip():
        lines.pop(0)
    return "".join(lines)


@pytest.mark.parametrize(
    ("name", "after", "language"),
    [
        ("relay@.service", "`/etc/systemd/system/relay@.service`", "ini"),
        ("nginx.conf", "nginx, a file in `conf.d/`", "nginx"),
        ("sysctl-relay.conf", "shared address (an office NAT)", ""),
    ],
)
def test_the_readme_shows_these_files_as_they_are(name, after, language):
    assert readme_block(after, language) == without_comment_header(DEPLOY / name)


def test_the_readme_shows_the_uvicorn_units_command_as_it_is():
    text = (DEPLOY / "relay-uvicorn@.service").read_text()
    command = re.search(r"^ExecStart=.*?\n(?!\s)", text, re.S | re.M).group(0)
    assert readme_block("uvicorn, `deploy/relay-uvicorn@.service` is this unit with", "ini") == command
