"""Chromium for the browser tests: Debian's ``chromium`` driven by Playwright's Python package.

Playwright's own browser download is not used (``make test`` installs Debian's chromium
where it is missing). Each browser gets a fresh profile in a temporary directory, and the
flags keep it from reaching anything but the servers under test. Screenshots go to
``tests/e2e/artifacts/`` (git-ignored), so that a CI run keeps them.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RELAY_JS = REPO / "relay" / "static" / "relay" / "relay.js"
ARTIFACTS = REPO / "tests" / "e2e" / "artifacts"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium; the test fails (never skips) without it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "The browser tests need chromium on PATH: `apt-get install -y chromium` (make test does it).",
            pytrace=False,
        )
    return found


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A Playwright ``BrowserContext`` of a new headless chromium with the profile ``profile``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot of ``page`` as ``tests/e2e/artifacts/<name>.png``; returns its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def collect_console(page: Any) -> list[str]:
    """The page's console errors and uncaught exceptions, collected as they happen."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    return problems
