"""Open the SQLite file the proxy, the CLI and the console share."""
from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.request import pathname2url

from sqlite_utils import Database

from . import pg
from .util import StoreError

BUSY_TIMEOUT_MS = 10_000


def open_db(path: str | Path, *, readonly: bool = False, create: bool = True) -> Database:
    """Open the database `path` names: a SQLite file, or a `postgresql://` URL.

    A SQLite file opens in WAL mode, created (mode 0600) unless told not to. A read-only
    open never creates anything: the console and `--readonly` tools should not leave an
    empty database behind when pointed at the wrong path. A PostgreSQL URL opens one
    connection (see store/pg.py); the database itself must exist.
    """
    if pg.is_url(path):
        return pg.PgDatabase(str(path), readonly=readonly)  # type: ignore[return-value]
    path = Path(path).expanduser()
    if readonly or not create:
        if not path.exists():
            raise StoreError(
                f"no database at {path}; start the proxy once (gemini-proxy serve), or pass --db"
            )
        if not os.access(path, os.R_OK):
            raise StoreError(f"database {path} is not readable by this user (check its owner and mode)")
    else:
        _create_private(path)
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{pathname2url(str(path.resolve()))}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
        else:
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        _configure(conn, readonly=readonly)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    # Plugins are skipped: nothing of ours uses them, and loading them costs an import scan.
    return Database(conn, execute_plugins=False)


def _create_private(path: Path) -> None:
    """Create the folder (0700) and an empty file (0600) before sqlite does, so keys never sit world-readable."""
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
        except OSError as exc:
            raise StoreError(f"cannot create folder {parent}: {exc.strerror}") from exc
    if path.exists():
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create database {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # the umask could have removed bits; it cannot add any, but be explicit
    finally:
        os.close(fd)


def _configure(conn: sqlite3.Connection, *, readonly: bool) -> None:
    """Apply the connection settings every process must agree on."""
    # busy_timeout first, so that switching to WAL waits for a lock instead of failing.
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        # Touch the schema now so "not a database" errors surface here, not on first query.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return
    conn.execute("PRAGMA journal_mode=WAL").fetchone()
    conn.execute("PRAGMA synchronous=NORMAL")


def is_postgres(db: Any) -> bool:
    """Tell whether `db` is a PostgreSQL database (else SQLite)."""
    return getattr(db, "dialect", "sqlite") == "postgres"


def describe(target: str | Path) -> str:
    """Return a PROXY_DB value fit to show: a SQLite path as is, a URL with its password masked."""
    return pg.mask_url(str(target))


# Advisory lock ids (PostgreSQL) for work that several hosts must not do at the same time.
LOCK_MIGRATE, LOCK_MERGE, LOCK_RETENTION = 0x67650001, 0x67650002, 0x67650003
# Tables read incrementally by seq: their writers hold these until commit (see pg.py).
LOCK_KEY_CHANGES, LOCK_PINS, LOCK_USAGE = 0x67650004, 0x67650005, 0x67650006


def serialize(db: Any, lock: int) -> None:
    """Inside a transaction, wait until no other host holds `lock` (PostgreSQL), until commit.

    SQLite needs nothing: `BEGIN IMMEDIATE` already lets one writer in at a time.
    """
    if is_postgres(db):
        db.execute("SELECT pg_advisory_xact_lock(?)", (lock,))


@contextlib.contextmanager
def exclusive(db: Any, lock: int) -> Iterator[bool]:
    """Hold `lock` for the block if no other host holds it (PostgreSQL); yield whether we do.

    A session lock, not a transaction's: the block may run several short transactions and
    still be the only host doing this work. SQLite has one host: always True.
    """
    if not is_postgres(db):
        yield True
        return
    held = bool(db.execute("SELECT pg_try_advisory_lock(?)", (lock,)).fetchone()[0])
    try:
        yield held
    finally:
        if held:
            try:
                db.execute("SELECT pg_advisory_unlock(?)", (lock,))
            except pg.database_errors():
                pass  # the connection went away, and the server released the lock with it


@contextlib.contextmanager
def transaction(db: Database) -> Iterator[Database]:
    """Run the block in a `BEGIN IMMEDIATE` transaction (a savepoint when one is already open).

    IMMEDIATE takes the write lock up front, so a read-then-write block cannot fail half way
    with SQLITE_BUSY when another process writes in between.
    """
    conn = db.conn
    if conn.in_transaction:
        name = f"sp_{secrets.token_hex(4)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield db
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def snapshot(db: Database) -> Iterator[Database]:
    """Run several reads against one consistent view of the database (a deferred read transaction)."""
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    # PostgreSQL's default isolation gives each statement its own view; ask for one view.
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if is_postgres(db) else "BEGIN")
    try:
        yield db
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def fetch_all(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
    """Return every row of `sql` as dicts (plain cursor: cheaper than `Database.query`'s savepoint)."""
    cursor = db.conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def fetch_one(db: Database, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
    """Return the first row of `sql` as a dict, or None."""
    cursor = db.conn.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row))
