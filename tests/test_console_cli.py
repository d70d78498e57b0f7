"""`gemini-console` on the command line: options, and one clear line when the database cannot be used."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.app import main
from proxy.store import migrate, open_db

ROOT = Path(__file__).resolve().parent.parent


def console(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "console.app", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={**os.environ, **(env or {})})


def test_help_explains_the_options():
    done = console("--help")
    assert done.returncode == 0
    for option in ("--db PATH", "--refresh SECONDS", "--read-only", "--upstream URL", "PROXY_DB", "data/keys.db"):
        assert option in done.stdout, option


def test_missing_database_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nope" / "keys.db"
    done = console("--db", str(missing))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no database at" in done.stderr and "Traceback" not in done.stderr
    assert not missing.exists() and not missing.parent.exists()  # nothing created


def test_db_comes_from_proxy_db_in_the_environment(tmp_path):
    missing = tmp_path / "from-env.db"
    done = console("--env-file", "", env={"PROXY_DB": str(missing)})
    assert done.returncode == 2 and str(missing) in done.stderr


def test_newer_schema_is_refused(tmp_path, capsys):
    path = tmp_path / "new.db"
    db = open_db(path)
    migrate(db)
    db.conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('9999_from_the_future', 0)")
    db.close()
    assert main(["--db", str(path), "--env-file", ""]) == 2
    err = capsys.readouterr().err
    assert "newer" in err and err.count("\n") == 1


def test_database_without_schema_is_refused(tmp_path, capsys):
    path = tmp_path / "empty.db"
    open_db(path).close()
    assert main(["--db", str(path), "--env-file", ""]) == 2
    assert "no schema yet" in capsys.readouterr().err


def test_file_that_is_not_a_database_is_refused(tmp_path, capsys):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    assert main(["--db", str(path), "--env-file", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gemini-console: ") and err.count("\n") == 1


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads every file")
def test_unreadable_database_is_refused(tmp_path, capsys):
    path = tmp_path / "locked.db"
    migrate(open_db(path))
    path.chmod(0)
    assert main(["--db", str(path), "--env-file", ""]) == 2
    assert "not readable" in capsys.readouterr().err


def test_bad_refresh_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--refresh", "0"])
    assert exit_.value.code == 2 and "refresh" in capsys.readouterr().err


def test_console_imports_no_flask():
    code = ("import sys, console.app, console.reads, proxy.store.views; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')]; print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
