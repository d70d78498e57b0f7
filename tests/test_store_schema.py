"""Named migrations: idempotent, recorded, and refusing databases from the future."""
from __future__ import annotations

import pytest

from proxy.store import SchemaMissing, SchemaTooNew, StoreError, check_schema, migrate, open_db
from proxy.store import schema

EXPECTED_COLUMNS = {
    "google_keys": [
        "id", "value", "masked", "label", "status", "invalid_reason", "invalid_at", "created_at",
        "updated_at", "last_used_at", "last_error", "rpm_cap",
    ],
    "key_health": ["key_id", "model", "cool_until", "reason", "last_error", "updated_at"],
    "stats_minute": [
        "minute", "key_id", "model", "user_id", "dialect", "requests", "ok", "rate_limited",
        "key_dead", "upstream_error", "client_error", "rejected", "tokens_in", "tokens_out",
        "cost_micros", "host",
    ],
    "requests": ["seq", *schema.REQUEST_COLUMNS],
    "events": ["id", "ts", "level", "message", "request_id", "status", "key_id", "model", "host"],
    "users": [
        "id", "label", "key_hash", "masked", "status", "created_at", "updated_at", "rpm_limit",
        "tpd_limit", "allowed_models",
    ],
    "pins": ["seq", "name", "key_id", "created_at"],
    "workers": ["host", "pid", "started_at", "last_seen", "version", "inflight", "served", "state"],
    "meta": ["key", "value"],
    "migrations": ["name", "applied_at"],
}


@pytest.fixture
def db(tmp_path):
    database = open_db(tmp_path / "keys.db")
    yield database
    database.close()

# Every migration this code knows, captured before any test patches the list.
ALL = schema.known_names()


def test_initial_migration_creates_the_contract(db):
    assert migrate(db) == ALL
    for table, columns in EXPECTED_COLUMNS.items():
        assert [c.name for c in db[table].columns] == columns, table
    assert db["requests"].pks == ["seq"]
    assert db["stats_minute"].pks == ["minute", "key_id", "model", "user_id", "dialect", "host"]
    assert db["key_health"].pks == ["key_id", "model"]
    assert db["workers"].pks == ["host", "pid"]
    indexes = {tuple(i.columns) for i in db["requests"].indexes}
    assert {("started_at",), ("host", "seq"), ("model", "seq"), ("key_id", "seq"), ("user_id", "seq"),
            ("status", "seq")} <= indexes
    assert {("key_id", "minute"), ("user_id", "minute")} <= {tuple(i.columns) for i in db["stats_minute"].indexes}
    assert ("ts",) in {tuple(i.columns) for i in db["events"].indexes}
    assert "AUTOINCREMENT" in db["requests"].schema.upper()
    secret = db.conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]
    assert len(secret) == 64 and int(secret, 16) >= 0


def test_defaults_and_constraints(db):
    migrate(db)
    db.execute("INSERT INTO google_keys (value) VALUES ('fake-key-0001')")
    assert db.conn.execute("SELECT status FROM google_keys").fetchone()[0] == "active"
    with pytest.raises(Exception, match="UNIQUE"):
        db.execute("INSERT INTO google_keys (value) VALUES ('fake-key-0001')")
    db.execute("INSERT INTO stats_minute (minute) VALUES (1)")
    row = db.conn.execute("SELECT key_id, model, user_id, dialect, requests, ok FROM stats_minute").fetchone()
    assert row == (0, "", 0, "native", 0, 0)
    db.execute("INSERT INTO requests (id) VALUES ('r1')")
    assert db.conn.execute("SELECT attempts, stream, status FROM requests").fetchone() == (0, 0, None)


def test_migrate_is_idempotent(db, tmp_path):
    assert migrate(db) == ALL
    assert migrate(db) == []
    other = open_db(tmp_path / "keys.db")
    assert migrate(other) == []
    check_schema(other)
    assert schema.applied(db) == ALL
    assert len(db.conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchall()) == 1


def test_adding_a_migration_is_one_line(db, monkeypatch):
    migrate(db)

    def add_notes(database):
        database["notes"].create({"id": int, "text": str}, pk="id")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, ("0002_notes", add_notes)])
    with pytest.raises(SchemaMissing, match="0002_notes"):
        check_schema(db)
    assert migrate(db) == ["0002_notes"]
    assert db["notes"].exists()
    check_schema(db)


def test_failed_migration_leaves_nothing_behind(db, monkeypatch):
    migrate(db)

    def broken(database):
        database["half"].create({"id": int}, pk="id")
        raise RuntimeError("broken migration")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, ("0002_broken", broken)])
    with pytest.raises(RuntimeError):
        migrate(db)
    assert not db["half"].exists()
    assert schema.applied(db) == ALL


def test_schema_too_new(db):
    migrate(db)
    db.execute("INSERT INTO migrations (name, applied_at) VALUES ('0099_from_the_future', 0)")
    with pytest.raises(SchemaTooNew, match="upgrade gemini-api-proxy"):
        check_schema(db)
    with pytest.raises(SchemaTooNew):
        migrate(db)
    assert issubclass(SchemaTooNew, StoreError)


def test_schema_missing(db):
    with pytest.raises(SchemaMissing, match="start the proxy once"):
        check_schema(db)
    assert issubclass(SchemaMissing, StoreError)


def test_concurrent_migrations_from_many_processes(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "keys.db"
    code = (
        "import sys; from proxy.store import open_db, migrate; "
        "print(','.join(migrate(open_db(sys.argv[1]))))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outputs) == [""] * 5 + [",".join(ALL)]


def test_hosts_migration_keeps_what_one_host_wrote(db_url, monkeypatch):
    """0007_hosts on a database that has rows: buckets keep their counts (host ''), and a
    bucket of the same minute and key from a named host is a row of its own."""
    database = open_db(db_url)
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] < "0007"])
    migrate(database)
    database.execute("INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, requests) "
                     "VALUES (1, 2, 'm', 3, 'native', 5)")
    database.execute("INSERT INTO requests (id, started_at) VALUES ('old', 1)")
    monkeypatch.undo()
    assert migrate(database) == ["0007_hosts"]
    database.execute("INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, requests, host) "
                     "VALUES (1, 2, 'm', 3, 'native', 7, 'host-b')")
    rows = database.execute("SELECT host, requests FROM stats_minute ORDER BY host").fetchall()
    assert [tuple(r) for r in rows] == [("", 5), ("host-b", 7)]
    assert database.execute("SELECT host FROM requests").fetchone()[0] is None
    check_schema(database)
    database.close()
