"""The package layout's import rules (README, "Development"), checked on the source.

Only module-level imports count: an import inside a function is a deliberate late one
(for instance ``relay.presence`` reaching this process's hub with the in-memory layer).
"""

import ast
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[1] / "relay"

#: Subpackage (or module) -> what it must never import at module level.
FORBIDDEN = {
    "relay.protocol": ("relay.identity", "relay.server", "relay.redis", "relay.contrib", "relay.api"),
    "relay.conf": ("relay.identity", "relay.server", "relay.redis", "relay.contrib"),
    "relay.exceptions": ("relay.",),
    "relay.identity": ("relay.server", "relay.redis", "relay.contrib"),
    "relay.redis": ("relay.server", "relay.identity", "relay.contrib"),
    "relay.server": ("relay.contrib",),
    "relay.presence": ("relay.server", "relay.contrib", "relay.redis.resp", "relay.redis.bus"),
    "relay.api": ("relay.server", "relay.contrib", "relay.redis.resp", "relay.redis.bus"),
    "relay.contrib.http_api": ("relay.server", "relay.redis", "relay.contrib.admin"),
    "relay.contrib.admin": ("relay.server", "relay.redis"),
    # The asyncio client runs in any program, without Django settings: the wire rules only.
    "relay.client": ("django", "channels", "relay.conf", "relay.api", "relay.identity", "relay.server", "relay.redis"),
    "relay.demo": ("relay.server", "relay.redis", "relay.contrib"),
    "relay.testing": ("relay.server", "relay.redis", "relay.contrib"),
}

#: The only module that may import relay.client (websockets is the optional [client] extra).
CLIENT_USERS = {"relay.management.commands.relay_listen"}


def module_name(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports outside functions (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import; the relay uses absolute ones"
                found.add(child.module or "")
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


SOURCES = sorted(path for path in RELAY.rglob("*.py") if "migrations" not in path.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: module_name(path))
def test_imports_follow_the_layout(path):
    name = module_name(path)
    imports = module_level_imports(path)
    assert not any(i == "relayproject" or i.startswith("relayproject.") for i in imports), "relay imports relayproject"
    for owner, forbidden in FORBIDDEN.items():
        if name == owner or name.startswith(owner + "."):
            bad = sorted(
                i for i in imports if any(i == f or i.startswith(f if f.endswith(".") else f + ".") for f in forbidden)
            )
            assert not bad, f"{name} imports {bad}"
    if not name.startswith("relay.contrib"):
        assert not [i for i in imports if i.startswith("relay.contrib")], f"{name} imports an optional contrib app"
    if name not in CLIENT_USERS | {"relay.client"}:
        assert not [i for i in imports if i == "relay.client" or i.startswith("relay.client.")], f"{name} imports it"


def test_the_rules_see_every_subpackage():
    packages = {module_name(path) for path in SOURCES if path.name == "__init__.py"}
    assert {
        "relay.identity",
        "relay.server",
        "relay.redis",
        "relay.contrib.http_api",
        "relay.contrib.admin",
        "relay.demo",
    } <= packages


def test_late_imports_are_not_counted_but_module_level_ones_are():
    imports = module_level_imports(RELAY / "presence.py")
    assert "relay.redis.keys" in imports
    assert "relay.server.hub" not in imports  # imported inside connections(), for the in-memory layer
    assert "relay.server.hub" in ast.dump(ast.parse((RELAY / "presence.py").read_text()))


def test_the_public_names_are_the_exported_ones():
    import relay

    assert sorted(relay.__all__) == sorted(relay._EXPORTS)
    for name in relay.__all__:
        assert getattr(relay, name) is not None
