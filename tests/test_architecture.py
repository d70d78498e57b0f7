"""The arrows point one way: store and translate stay framework-free, the console skips Flask."""
import json
import subprocess
import sys

import pytest


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module,forbidden", [
    ("proxy.store", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.store.writer", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.outcomes", {"flask", "werkzeug", "textual", "requests"}),
    ("proxy.pool", {"flask", "werkzeug", "textual", "requests"}),
    ("console.app", {"flask", "werkzeug", "gunicorn"}),
])
def test_framework_free_modules(module, forbidden):
    loaded = modules_after_import(module)
    assert not forbidden & {m.split(".")[0] for m in loaded}


def test_cli_master_does_not_import_requests_before_gevent_patches():
    # `serve` forks gevent workers that patch ssl/socket; importing requests in the master
    # first would leave sockets unpatched in the workers.
    loaded = modules_after_import("proxy.cli.main")
    assert not {"requests", "urllib3", "flask", "ssl"} & loaded
