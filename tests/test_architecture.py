"""The arrows point one way: checked on the static import graph, and in fresh interpreters.

The rules are those of ARCHITECTURE.md ("Which room may import which"). The static graph
sees every import, lazy ones inside functions included; the fresh interpreters check what
importing a module really loads.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"flask", "werkzeug", "requests", "urllib3", "gevent", "gunicorn", "textual"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Return every module `path` imports (absolute names; relative ones resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {_module_name(p): _imports(p) for d in ("proxy", "console")
         for p in (ROOT / d).rglob("*.py")}


def _offenders(modules: str, forbidden: set[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """Return, for each module under `modules`, the imports that start with a forbidden name."""
    bad: dict[str, list[str]] = {}
    for module, imports in GRAPH.items():
        if module == modules or module.startswith(modules + "."):
            hits = sorted(i for i in imports for f in forbidden if i == f or i.startswith(f + "."))
            if hits:
                bad[module] = hits
    return bad


def _proxy_imports_outside(modules: str, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """Return the proxy modules that `modules` imports beyond `allowed` (and themselves)."""
    bad: dict[str, list[str]] = {}
    for module, imports in GRAPH.items():
        if module == modules or module.startswith(modules + "."):
            hits = sorted(i for i in imports if i.startswith("proxy.") and i != "proxy"
                          and not i.startswith((modules + ".", *allowed)) and i != modules)
            if hits:
                bad[module] = hits
    return bad


def test_translate_is_pure():
    """Translators do no I/O and know nothing of the rest of the proxy."""
    assert _offenders("proxy.translate", FRAMEWORKS | {"sqlite3", "sqlite_utils", "socket"}) == {}
    assert _proxy_imports_outside("proxy.translate", ()) == {}


def test_store_knows_no_web_stack_and_nothing_above_it():
    assert _offenders("proxy.store", FRAMEWORKS - {"gevent"}) == {}
    # the version for heartbeats, real threads for the writer, redaction as a last line
    assert _proxy_imports_outside("proxy.store", ("proxy.realthread", "proxy.redact",
                                                  "proxy.__version__")) == {}


def test_console_reaches_data_only_through_the_store():
    assert _offenders("console", {"flask", "werkzeug", "gunicorn", "requests"}) == {}
    # plus the pure helpers it shares with the proxy: Google's error bodies, key masking
    allowed = ("proxy.store", "proxy.humanize", "proxy.settings", "proxy.redact", "proxy.outcomes")
    hits = {m: [i for i in imports if i.startswith("proxy.") and not i.startswith(allowed)]
            for m, imports in GRAPH.items() if m.startswith("console")}
    assert {m: h for m, h in hits.items() if h} == {}


def test_no_route_imports_another_route():
    for module, imports in GRAPH.items():
        if module.startswith("proxy.routes."):
            others = {i for i in imports if i.startswith("proxy.routes.")
                      and not i.startswith(module)}
            assert not others, f"{module} imports {sorted(others)}"


@pytest.mark.parametrize("lower, higher", [
    # routes → pipeline → upstream/relay → pool → store (upstream → transport): nothing points back up
    ("proxy.pool", ("proxy.upstream", "proxy.relay", "proxy.pipeline", "proxy.passthrough",
                    "proxy.routes", "proxy.http", "proxy.app", "flask")),
    ("proxy.outcomes", ("proxy.upstream", "proxy.pipeline", "proxy.routes", "proxy.http",
                        "flask", "requests")),
    ("proxy.upstream", ("proxy.pipeline", "proxy.passthrough", "proxy.routes", "proxy.http",
                        "proxy.app", "flask")),
    ("proxy.transport", ("proxy.upstream", "proxy.pool", "proxy.outcomes", "proxy.pipeline",
                         "proxy.routes", "proxy.http", "proxy.app", "flask")),
    ("proxy.relay", ("proxy.pipeline", "proxy.passthrough", "proxy.routes", "proxy.http",
                     "proxy.app", "flask")),
    ("proxy.exchange", ("proxy.pipeline", "proxy.routes", "proxy.http", "proxy.app", "flask")),
    ("proxy.pipeline", ("proxy.routes", "proxy.passthrough", "proxy.app")),
    ("proxy.passthrough", ("proxy.routes", "proxy.app")),
])
def test_layers_point_one_way(lower, higher):
    assert _offenders(lower, higher) == {}


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module,forbidden", [
    ("proxy.store", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.store.writer", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.outcomes", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.pool", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.translate", {"flask", "werkzeug", "requests", "gevent", "sqlite3"}),
    ("console.app", {"flask", "werkzeug", "gunicorn"}),
])
def test_framework_free_modules_in_a_fresh_interpreter(module, forbidden):
    loaded = modules_after_import(module)
    assert not forbidden & {m.split(".")[0] for m in loaded}


def test_cli_master_does_not_import_requests_before_gevent_patches():
    # `serve` forks gevent workers that patch ssl/socket; importing requests in the master
    # first would leave sockets unpatched in the workers.
    loaded = modules_after_import("proxy.cli.main")
    assert not {"requests", "urllib3", "flask", "ssl"} & loaded


def test_a_sqlite_store_never_loads_psycopg(tmp_path):
    """psycopg (and the asyncio it brings, several MB per worker) is loaded only for a
    PostgreSQL store, even where the extra is installed: a SQLite worker that starts, serves
    and records a request, and handles a database error, goes without it."""
    code = f"""
import json, sqlite3, sys
from proxy.app import create_app
from proxy.settings import Settings
from proxy.store import writer
app = create_app(Settings(db_path={str(tmp_path / "proxy.db")!r}, upstream_url="http://127.0.0.1:9",
                          user_keys=["user-key-1"], log_level="WARNING"))
assert app.test_client().get("/v1beta/models").status_code == 401  # a refusal, recorded
app.extensions["proxy"].writer.flush()
try:
    raise sqlite3.OperationalError("database is locked")
except writer._operational():
    pass
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    loaded = {m.split(".")[0] for m in json.loads(out.stdout.splitlines()[-1])}
    assert "psycopg" not in loaded and "asyncio" not in loaded
