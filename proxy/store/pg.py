"""PostgreSQL behind the same small interface the store uses on SQLite.

The store's SQL is written once, in the dialect SQLite and PostgreSQL share. What differs is
bridged here, at one point, instead of in every module: placeholders (`?` and `:name` become
`%s` and `%(name)s`), SQLite's `INSERT OR IGNORE`, its two-argument scalar `max()`/`min()`
(GREATEST/LEAST), its case-insensitive LIKE (ILIKE), `rowid` (ctid), and the planner hint
`INDEXED BY` (dropped). A `PgDatabase` answers `execute`, `conn.execute`,
`conn.executemany` and `conn.in_transaction` the way the sqlite3-backed sqlite-utils
`Database` does, so store functions take either without knowing which.

psycopg 3 is an optional extra; importing this module without it raises StoreError with
the command that installs it.
"""
from __future__ import annotations

import functools
import re
import sys
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from .util import StoreError

INSTALL_HINT = "pip install 'gemini-api-proxy[postgres]'"
CONNECT_TIMEOUT = 5


def is_url(target: object) -> bool:
    """Tell whether a PROXY_DB value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def mask_url(url: str) -> str:
    """Return `url` with its password masked, for logs, --help, the console header and /metrics."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def where(url: str) -> str:
    """Return host:port of a PostgreSQL URL, for one-line errors."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(f"PROXY_DB is a PostgreSQL URL but psycopg is not installed; run: {INSTALL_HINT}") from None
    return psycopg


def operational_errors() -> tuple[type[BaseException], ...]:
    """Return the errors of a server that is down or lost: psycopg's OperationalError and
    InterfaceError, and ConnectFailed (a reconnect refused); none before psycopg is loaded.

    Only a PostgreSQL store loads psycopg, and none of its errors can arise before it
    does: a SQLite store never pays for it (psycopg and asyncio, several MB per worker).
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError, ConnectFailed)


def database_errors() -> tuple[type[BaseException], ...]:
    """Return psycopg's base error class; none before psycopg is loaded (as above)."""
    psycopg = sys.modules.get("psycopg")
    return () if psycopg is None else (psycopg.Error,)


def is_contention(exc: BaseException) -> bool:
    """Whether a psycopg error is lock contention (deadlock, serialization, lock timeout): retry soon."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate in ("40001", "40P01", "55P03")


def is_unavailable(exc: BaseException) -> bool:
    """Whether a psycopg error says the server cannot take writes now (down, lost, full, read-only).

    Class 08 (connection), 53 (resources: disk full), 57 (shut down, crash recovery),
    25006 (a read-only standby), or no SQLSTATE at all (the connection broke).
    """
    if is_contention(exc):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        return isinstance(exc, operational_errors())
    return sqlstate[:2] in ("08", "53", "57", "58") or sqlstate == "25006"


def is_unreachable(exc: BaseException) -> bool:
    """Whether a psycopg error says the server cannot be reached at all (down, shutting down,
    starting, or the connection lost), as opposed to refusing writes (full, read-only)."""
    if is_contention(exc):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        return isinstance(exc, operational_errors())
    return sqlstate[:2] == "08" or sqlstate in ("57P01", "57P02", "57P03")


def first_line(exc: BaseException) -> str:
    """Return the first line of an error (psycopg's run to several, with hints)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- SQL translation ---------------------------------------------------------------------------

_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|(?<!:):([A-Za-z_]\w*)|%|\b(?:max|min)\(|\browid\b|\bLIKE\b"
                    r"|\bINDEXED BY \w+|\bBEGIN IMMEDIATE\b|\bINSERT OR IGNORE\b", re.IGNORECASE)


def _scalar_pair(sql: str, start: int) -> bool:
    """Tell whether the call whose '(' is at sql[start-1] has a top-level comma (scalar max/min)."""
    depth = 0
    for i in range(start, len(sql)):
        c = sql[i]
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                return False
            depth -= 1
        elif c == "," and depth == 0:
            return True
        elif c == "'":
            i = sql.index("'", i + 1)
    return False


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """Rewrite one statement of the store's SQL for PostgreSQL (see the module docstring)."""
    out: list[str] = []
    pos = 0
    ignore = False
    for m in _TOKEN.finditer(sql):
        out.append(sql[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        upper = tok.upper()
        if tok.startswith("'"):
            out.append(tok.replace("%", "%%"))
        elif tok == "?":
            out.append("%s")
        elif tok == "%":
            out.append("%%")
        elif tok.startswith(":"):
            out.append(f"%({m.group(1)})s")
        elif upper in ("MAX(", "MIN("):
            pair = _scalar_pair(sql, m.end())
            out.append(("GREATEST(" if upper == "MAX(" else "LEAST(") if pair else tok)
        elif upper == "ROWID":
            out.append("ctid")
        elif upper == "LIKE":
            out.append("ILIKE")
        elif upper.startswith("INDEXED BY"):
            out.append("")
        elif upper == "BEGIN IMMEDIATE":
            out.append("BEGIN")
        elif upper == "INSERT OR IGNORE":
            out.append("INSERT")
            ignore = True
    out.append(sql[pos:])
    text = "".join(out)
    if ignore:
        text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return text


# -- connections -------------------------------------------------------------------------------

class _Numbers:
    """Load numeric (what sum() of a bigint gives) as int or float, like SQLite hands them back."""

    @staticmethod
    def register(conn: Any) -> None:
        psycopg = _psycopg()

        class Loader(psycopg.adapt.Loader):
            def load(self, data: Any) -> Any:
                text = bytes(data).decode()
                if "." in text or "e" in text.lower() or text in ("NaN", "Infinity", "-Infinity"):
                    return float(text)
                return int(text)

        conn.adapters.register_loader("numeric", Loader)


class PgConnection:
    """A psycopg connection that speaks the store's SQL; reconnects after the server went away."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self._conn: Any = None
        self._connect()

    def _connect(self) -> None:
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name="gemini-api-proxy")
        except psycopg.OperationalError as exc:
            raise ConnectFailed(f"cannot reach PostgreSQL at {where(self.url)}: {first_line(exc)}") from exc
        _Numbers.register(conn)
        self._conn = conn

    def _live(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._connect()
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = ()) -> Any:
        """Run one statement; return the cursor (description, fetchone, fetchall, rowcount)."""
        return self._live().execute(translate(sql), params if params is not None else ())

    def executemany(self, sql: str, rows: Sequence[Any]) -> Any:
        """Run one statement for every parameter row (psycopg pipelines them)."""
        rows = list(rows)
        cur = self._live().cursor()
        if rows:
            cur.executemany(translate(sql), rows)
        return cur

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on this connection."""
        if self._conn is None or self._conn.closed:
            return False
        psycopg = _psycopg()
        status = self._conn.info.transaction_status
        return status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class ConnectFailed(StoreError):
    """Raise when PostgreSQL cannot be reached at all."""


class PgDatabase:
    """The part of sqlite-utils' Database the store uses, over PostgreSQL."""

    dialect = "postgres"

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.conn = PgConnection(url, readonly=readonly)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = ()) -> Any:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = ()) -> Iterator[dict[str, Any]]:
        """Yield each row of `sql` as a dict (as sqlite-utils' Database.query does)."""
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            yield dict(zip(names, row))

    def __getitem__(self, name: str) -> "PgTable":
        return PgTable(self, name)

    def close(self) -> None:
        self.conn.close()

    def __repr__(self) -> str:
        return f"PgDatabase({mask_url(self.url)!r})"


class PgTable:
    """The few sqlite-utils Table conveniences operators' scripts and tests use: count, exists, get."""

    def __init__(self, db: PgDatabase, name: str) -> None:
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError(f"not a table name: {name!r}")
        self.db, self.name = db, name

    @property
    def count(self) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {self.name}").fetchone()[0])

    def exists(self) -> bool:
        return self.db.execute("SELECT to_regclass(?)", (self.name,)).fetchone()[0] is not None

    def get(self, pk: Any) -> dict[str, Any]:
        pk_column = "seq" if self.name in ("requests", "pins") else "id"
        cur = self.db.execute(f"SELECT * FROM {self.name} WHERE {pk_column} = ?", (pk,))
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"{self.name} has no row {pk!r}")
        return dict(zip([d[0] for d in cur.description], row))
