"""Opening the database: file modes, folders, read-only opens, transactions."""
from __future__ import annotations

import os
import stat

import pytest

from proxy.store import StoreError, open_db, transaction
from proxy.store.schema import migrate


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_private_folder_and_file(tmp_path):
    old = os.umask(0o000)  # the most permissive umask must not leak into the modes
    try:
        path = tmp_path / "nested" / "data" / "keys.db"
        db = open_db(path)
        migrate(db)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    db.close()


def test_pragmas(tmp_path):
    db = open_db(tmp_path / "keys.db")
    pragma = lambda name: db.conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("busy_timeout") == 10000
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("foreign_keys") == 1
    assert db.conn.isolation_level is None


def test_readonly_missing_file_is_a_clear_error_and_creates_nothing(tmp_path):
    path = tmp_path / "nope" / "keys.db"
    with pytest.raises(StoreError, match="no database at .*; start the proxy once"):
        open_db(path, readonly=True)
    assert not path.parent.exists()


def test_create_false_does_not_create(tmp_path):
    with pytest.raises(StoreError, match="no database at"):
        open_db(tmp_path / "keys.db", create=False)
    assert not (tmp_path / "keys.db").exists()


def test_readonly_reads_but_cannot_write(tmp_path):
    path = tmp_path / "keys.db"
    rw = open_db(path)
    migrate(rw)
    ro = open_db(path, readonly=True)
    assert ro.conn.execute("SELECT count(*) FROM google_keys").fetchone()[0] == 0
    with pytest.raises(Exception, match="readonly"):
        ro.conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")


def test_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "keys.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        open_db(path, readonly=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_store_error(tmp_path):
    path = tmp_path / "keys.db"
    migrate(open_db(path))
    os.chmod(path, 0)
    with pytest.raises(StoreError, match="not readable"):
        open_db(path, readonly=True)


def test_transaction_commits_and_rolls_back(tmp_path):
    db = open_db(tmp_path / "keys.db")
    migrate(db)
    with transaction(db):
        db.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
    with pytest.raises(RuntimeError):
        with transaction(db):
            db.execute("INSERT INTO meta (key, value) VALUES ('b', '2')")
            raise RuntimeError("boom")
    keys = {r[0] for r in db.conn.execute("SELECT key FROM meta")}
    assert "a" in keys and "b" not in keys
    assert not db.conn.in_transaction


def test_nested_transaction_is_a_savepoint(tmp_path):
    db = open_db(tmp_path / "keys.db")
    migrate(db)
    with transaction(db):
        db.execute("INSERT INTO meta (key, value) VALUES ('outer', '1')")
        with pytest.raises(RuntimeError):
            with transaction(db):
                db.execute("INSERT INTO meta (key, value) VALUES ('inner', '2')")
                raise RuntimeError("undo only the inner block")
    keys = {r[0] for r in db.conn.execute("SELECT key FROM meta")}
    assert "outer" in keys and "inner" not in keys


def test_a_path_sqlite_cannot_open_is_a_store_error(tmp_path):
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(StoreError, match="cannot open database"):
        open_db(folder, readonly=True)
