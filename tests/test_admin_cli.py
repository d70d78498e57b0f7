"""`gemini-proxy keys …` and `gemini-proxy users …`, driven through argparse like the main CLI."""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.cli import admin
from proxy.store import hash_user_key, migrate, open_db

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemini-proxy")
    subparsers = parser.add_subparsers(dest="command")
    admin.add_parsers(subparsers)
    return parser


def created(path: Path) -> Path:
    """Create the database as the proxy's first start does."""
    migrate(open_db(path))
    return path


@pytest.fixture
def db_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env from the folder the suite runs in
    monkeypatch.delenv("PROXY_DB", raising=False)
    return created(tmp_path / "data" / "keys.db")


@pytest.fixture
def run(db_file, capsys):
    """Run one command line against the test database; return (exit code, stdout, stderr)."""

    def run(*argv: str, parser: argparse.ArgumentParser | None = None) -> tuple[int, str, str]:
        args = (parser or build_parser()).parse_args([*argv, "--db", str(db_file)])
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def db(path):
    return open_db(path)


def gemini_proxy(cwd: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed entry point's code in `cwd`, as an operator would."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PROXY_DB", "GOOGLE_KEYS", "USER_KEYS")}
    return subprocess.run([sys.executable, "-c", "import sys; from proxy.cli.main import main; "
                           "sys.exit(main())", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**clean, **(env or {})})


@pytest.mark.parametrize("argv", [("keys", "list"), ("users", "add", "bob"),
                                  ("db", "check"), ("db", "migrate"), ("db", "backup", "b.db")])
def test_commands_refuse_to_create_a_database(tmp_path, argv):
    """From the wrong folder, a command says where it looked instead of starting an empty pool."""
    done = gemini_proxy(tmp_path, *argv)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "no database at data/keys.db; start the proxy once" in done.stderr
    assert "--db" in done.stderr
    assert not (tmp_path / "data").exists()


def test_commands_read_proxy_db_from_dotenv_like_serve(tmp_path):
    target = created(tmp_path / "elsewhere" / "pool.db")
    (tmp_path / ".env").write_text(f"PROXY_DB={target}\n")
    done = gemini_proxy(tmp_path, "users", "add", "bob")
    assert done.returncode == 0, done.stderr
    assert db(target)["users"].count == 1
    assert not (tmp_path / "data").exists()
    other = tmp_path / "other.env"
    other.write_text("PROXY_DB=nowhere.db\n")
    done = gemini_proxy(tmp_path, "keys", "list", "--env-file", str(other))
    assert done.returncode == 2 and "no database at nowhere.db" in done.stderr


def test_db_migrate_create_makes_the_database_on_request(tmp_path):
    done = gemini_proxy(tmp_path, "db", "migrate", "--create")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "keys.db").exists()
    assert gemini_proxy(tmp_path, "keys", "list").returncode == 0


def test_keys_add_list_on_a_fresh_path(run, db_file):
    code, out, err = run("keys", "add", "fake-key-0001-abcd", "--label", "main")
    assert (code, err) == (0, "")
    assert out == "added key 1 fake…abcd (main)\n"
    assert db_file.exists()
    code, out, _ = run("keys", "add", "fake-key-0001-abcd")
    assert out == "key 1 fake…abcd is already in the pool (active)\n"
    code, out, _ = run("keys", "list")
    assert code == 0
    header, line = out.splitlines()
    assert header.split()[:4] == ["ID", "KEY", "LABEL", "STATUS"]
    assert line.split()[:4] == ["1", "fake…abcd", "main", "usable"]
    assert "fake-key-0001-abcd" not in out


def test_keys_list_shows_cooldowns_rates_and_usage(run, db_file):
    run("keys", "add", "fake-key-0001-abcd")
    database = db(db_file)
    now = time.time()
    database.execute("INSERT INTO key_health VALUES (1, 'gemini-2.5-pro', ?, 'per-minute', 'x', ?)", (now + 192, now))
    database.execute(
        "INSERT INTO stats_minute (minute, key_id, requests, ok, rate_limited, tokens_in, tokens_out) "
        "VALUES (?, 1, 4, 3, 1, 1200, 300)",
        (int(now // 60),),
    )
    code, out, _ = run("keys", "list")
    line = out.splitlines()[1]
    assert "gemini-2.5-pro 3m1" in line  # 3m12s or 3m11s depending on the clock
    assert "75%" in line
    assert line.split()[-4:] == ["1/1", "4", "1.5k", "-"]  # failed 5m/1h, tries, tokens, no cap


def test_keys_list_json_and_all(run):
    run("keys", "add", "fake-key-0001")
    run("keys", "add", "fake-key-0002")
    run("keys", "remove", "2")
    code, out, _ = run("keys", "list", "--json")
    keys = json.loads(out)
    assert [k["id"] for k in keys] == [1]
    assert "value" not in keys[0] and "fake-key-0001" not in out
    _, out, _ = run("keys", "list", "--all", "--json")
    assert [(k["id"], k["status"], k["state"]) for k in json.loads(out)] == [
        (1, "active", "usable"), (2, "removed", "removed")]
    # The fields scripts already read are all still there, beside the new ones.
    before = {"id", "masked", "label", "status", "invalid_reason", "invalid_at", "created_at", "updated_at",
              "last_used_at", "last_error", "rpm_cap", "usable", "cooldowns", "success_rate",
              "requests_today", "tokens_today"}
    new = {"state", "sick", "attempts_today", "attempts_5m", "attempts_60m", "failed_5m", "failed_60m",
           "rpm_used", "rpm_used_model"}
    assert before | new <= set(keys[0])


def put_minute(path, key_id: int, minute: int, **counts: int) -> None:
    cols = ", ".join(counts)
    db(path).execute(
        f"INSERT INTO stats_minute (minute, key_id, model, {cols}) VALUES (?, ?, 'gemini-2.5-flash', "
        f"{', '.join('?' * len(counts))})", (minute, key_id, *counts.values()))


def test_keys_list_says_dead_and_sick_as_the_console_does(run, db_file):
    run("keys", "add", "fake-key-0001-good", "--label", "good")
    run("keys", "add", "fake-key-0002-dead", "--label", "dead")
    run("keys", "add", "fake-key-0003-sick", "--label", "sick")
    db(db_file).execute("UPDATE google_keys SET invalid_reason = 'API_KEY_INVALID: API key not valid' WHERE id = 2")
    # Google's quota errors run to several lines: the listing keeps one line per key.
    db(db_file).execute("UPDATE google_keys SET last_error = ? WHERE id = 1",
                        ("You exceeded your current quota.\n* Quota exceeded for metric: " + "x" * 200,))
    # The sick key answered 503 to five tries this minute, each retried on another key.
    put_minute(db_file, 3, int(time.time() // 60), upstream_error=5)
    done = gemini_proxy(db_file.parent, "keys", "list", "--db", str(db_file))
    assert done.returncode == 0, done.stderr
    header, good, dead, sick = done.stdout.splitlines()
    assert header.split()[3] == "STATUS"
    assert good.split()[1:4] == ["fake…good", "good", "usable"]
    assert "quota. * Quota exceeded" in good and good.endswith("x…")
    assert dead.split()[1:4] == ["fake…dead", "dead", "dead"] and "API_KEY_INVALID: API key not valid" in dead
    assert sick.split()[1:4] == ["fake…sick", "sick", "sick"]
    assert "5/5" in sick.split() and sick.split()[sick.split().index("5/5") + 1] == "5"  # 5 tries today


def test_keys_list_shows_the_rpm_cap_and_its_use(run, db_file):
    run("keys", "add", "fake-key-0001-abcd")
    run("keys", "cap", "1", "--rpm", "10")
    # The same tries in this minute and the next: whichever the command reads in, it sees 3.
    for minute in (int(time.time() // 60), int(time.time() // 60) + 1):
        put_minute(db_file, 1, minute, ok=3)
    _, out, _ = run("keys", "list")
    assert "RPM/CAP" in out.splitlines()[0] and "3/10" in out.splitlines()[1].split()
    _, out, _ = run("keys", "list", "--json")
    key = json.loads(out)[0]
    assert (key["rpm_cap"], key["rpm_used"], key["rpm_used_model"]) == (10, 3, "gemini-2.5-flash")


def test_key_actions(run, db_file):
    run("keys", "add", "fake-key-0001-abcd", "--label", "main")
    assert run("keys", "disable", "main")[1] == "key 1 fake…abcd (main) disabled\n"
    assert db(db_file)["google_keys"].get(1)["status"] == "disabled"
    assert run("keys", "enable", "fake...abcd")[1] == "key 1 fake…abcd (main) enabled\n"
    assert run("keys", "reset", "1")[1] == "key 1 fake…abcd (main) reset\n"
    assert run("keys", "remove", "fake-key-0001-abcd")[1] == "key 1 fake…abcd (main) removed\n"
    assert db(db_file)["google_keys"].get(1)["status"] == "removed"
    code, out, _ = run("keys", "add", "fake-key-0001-abcd")
    assert out == "key 1 fake…abcd was removed; it is active again\n"


def test_unknown_ref_and_bad_value_exit_2_with_one_line(run):
    code, out, err = run("keys", "disable", "nope")
    assert code == 2 and out == ""
    assert err.startswith("error: no key matches 'nope'") and err.count("\n") == 1
    code, _, err = run("keys", "add", "not a key")
    assert code == 2 and "not a Google API key" in err and "not a key" not in err
    code, _, err = run("users", "remove", "ghost")
    assert code == 2 and err.startswith("error: no user matches 'ghost'")


def test_keys_add_from_stdin(run, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("fake-key-0001\n\n# a comment\nfake-key-0002\n"))
    code, out, _ = run("keys", "add", "-")
    assert code == 0
    assert out.splitlines() == ["added key 1 fake…0001", "added key 2 fake…0002"]


def test_users_add_prints_the_key_once(run, db_file):
    code, out, _ = run("users", "add", "alice")
    assert code == 0
    key = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key: "))
    assert key.startswith("gp-")
    assert "shown only once" in out
    row = db(db_file)["users"].get(1)
    assert row["key_hash"] == hash_user_key(key)
    _, listing, _ = run("users", "list")
    assert key not in listing and row["masked"] in listing


def test_users_add_with_given_key_does_not_echo_it(run, db_file):
    code, out, _ = run("users", "add", "bob", "--key", "bobs-own-secret-key-123")
    assert code == 0 and "bobs-own-secret-key-123" not in out
    assert db(db_file)["users"].get(1)["key_hash"] == hash_user_key("bobs-own-secret-key-123")
    code, _, err = run("users", "add", "bob")
    assert code == 2 and "already exists" in err


def test_users_limits_list_remove(run, db_file):
    run("users", "add", "alice")
    code, out, _ = run("users", "limits", "alice", "--rpm", "30", "--tpd", "2000000", "--models", "gemini-a|gemini-b")
    assert code == 0
    assert out == "user 1 'alice': rpm 30, tpd 2000000, models gemini-a, gemini-b\n"
    assert run("users", "limits", "1")[1] == out  # no options: just show
    assert run("users", "limits", "alice", "--rpm", "none", "--models", "")[1] == (
        "user 1 'alice': rpm none, tpd 2000000, models any\n"
    )
    _, out, _ = run("users", "list", "--json")
    users = json.loads(out)
    assert users[0]["label"] == "alice" and users[0]["tpd_limit"] == 2000000
    assert "key_hash" not in users[0]
    assert run("users", "remove", "alice")[1] == "user 1 'alice' removed; their key no longer works\n"
    assert run("users", "list")[1].startswith("no users yet")
    assert "removed" in run("users", "list", "--all")[1]


def test_bad_limit_is_an_argparse_error(db_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["users", "limits", "alice", "--rpm", "lots", "--db", str(db_file)])
    assert exit_.value.code == 2
    assert "not a whole number" in capsys.readouterr().err


def test_db_path_comes_from_the_settings_loader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROXY_DB", raising=False)
    args = argparse.Namespace(db=None, env_file=".env")
    assert admin.db_path(args) == "data/keys.db"
    (tmp_path / ".env").write_text("PROXY_DB=/srv/from-dotenv.db\n")
    assert admin.db_path(args) == "/srv/from-dotenv.db"  # .env, as serve reads it
    monkeypatch.setenv("PROXY_DB", "/srv/proxy.db")
    assert admin.db_path(args) == "/srv/proxy.db"  # the environment wins over .env
    assert admin.db_path(argparse.Namespace(db="x.db", env_file=".env")) == "x.db"


def test_env_proxy_db_is_used(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    target = created(tmp_path / "env.db")
    monkeypatch.setenv("PROXY_DB", str(target))
    args = build_parser().parse_args(["keys", "add", "fake-key-0001"])
    assert args.func(args) == 0
    assert db(target)["google_keys"].count == 1


def test_help_texts(capsys):
    parser = build_parser()
    for argv in (["keys", "--help"], ["keys", "add", "--help"], ["users", "limits", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "masked" in out and "stdin" in out and "--db PATH" in out and "no limit" in out


def test_family_without_action_prints_help(capsys):
    args = build_parser().parse_args(["keys"])
    assert args.func(args) == 2
    assert "ACTION" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    path = created(tmp_path / "keys.db")
    cmd = [sys.executable, "-m", "proxy.cli.admin"]
    done = subprocess.run([*cmd, "keys", "add", "fake-key-0001", "--db", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "added key 1 fake…0001\n"
    done = subprocess.run([*cmd, "keys", "enable", "nope", "--db", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error:")
