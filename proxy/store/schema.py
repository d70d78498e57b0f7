"""Create and evolve the schema through named, ordered migrations.

To change the schema, append `("000N_what_it_does", function)` to MIGRATIONS. Never edit or
reorder a migration that has shipped: databases in the field have recorded its name.
"""
from __future__ import annotations

import secrets
from typing import Callable

from sqlite_utils import Database

from .db import LOCK_KEY_CHANGES, LOCK_MIGRATE, fetch_all, is_postgres, serialize, transaction
from .util import StoreError, now

Migration = tuple[str, Callable[[Database], None]]


class SchemaTooNew(StoreError):
    """Raise when the database was migrated by a newer gemini-api-proxy than this one."""


class SchemaMissing(StoreError):
    """Raise when the database has not been (fully) migrated yet."""


# Columns of `requests` that writers may set (seq is assigned by SQLite).
REQUEST_COLUMNS: tuple[str, ...] = (
    "id", "started_at", "ended_at", "user_id", "user_label", "dialect", "method", "path",
    "model", "key_id", "key_masked", "status", "attempts", "attempts_detail", "stream",
    "ttfb_ms", "duration_ms", "tokens_in", "tokens_out", "error_class", "error_message",
    "worker_pid", "cost_usd", "remote_addr", "presented_key", "host",
)

# The counters 0001_initial created; frozen, later migrations add to STATS_COUNTERS.
_INITIAL_COUNTERS: tuple[str, ...] = (
    "requests", "ok", "rate_limited", "key_dead", "upstream_error", "client_error",
    "rejected", "tokens_in", "tokens_out",
)
STATS_COUNTERS: tuple[str, ...] = _INITIAL_COUNTERS + ("cost_micros",)

# Outcomes of one upstream attempt; each is a counter column of stats_minute.
OUTCOMES: tuple[str, ...] = (
    "ok", "rate_limited", "key_dead", "upstream_error", "client_error", "rejected",
)


def _initial(db: Database) -> None:
    """Create the first version of every table."""
    db.create_table(
        "google_keys",
        {
            "id": "INTEGER", "value": "TEXT", "masked": "TEXT", "label": "TEXT",
            "status": "TEXT", "invalid_reason": "TEXT", "invalid_at": "REAL",
            "created_at": "REAL", "updated_at": "REAL", "last_used_at": "REAL",
            "last_error": "TEXT", "rpm_cap": "INTEGER",
        },
        pk="id",
        not_null=["value", "status"],
        defaults={"status": "active"},
    )
    db["google_keys"].create_index(["value"], index_name="google_keys_value", unique=True)

    db.create_table(
        "key_health",
        {
            "key_id": "INTEGER", "model": "TEXT", "cool_until": "REAL", "reason": "TEXT",
            "last_error": "TEXT", "updated_at": "REAL",
        },
        pk=("key_id", "model"),
    )

    db.create_table(
        "stats_minute",
        {
            "minute": "INTEGER", "key_id": "INTEGER", "model": "TEXT", "user_id": "INTEGER",
            "dialect": "TEXT", **{c: "INTEGER" for c in _INITIAL_COUNTERS},
        },
        pk=("minute", "key_id", "model", "user_id", "dialect"),
        not_null=["key_id", "model", "user_id", "dialect"],
        defaults={
            "key_id": 0, "model": "", "user_id": 0, "dialect": "native",
            **{c: 0 for c in _INITIAL_COUNTERS},
        },
    )
    db["stats_minute"].create_index(["key_id", "minute"], index_name="stats_minute_key")
    db["stats_minute"].create_index(["user_id", "minute"], index_name="stats_minute_user")

    # sqlite-utils cannot declare AUTOINCREMENT, and these tables need it: readers page and
    # tail them by seq/id, which must never be reused after old rows are pruned.
    db.execute(
        """
        CREATE TABLE requests (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT UNIQUE NOT NULL,
            started_at REAL,
            ended_at REAL,
            user_id INTEGER,
            user_label TEXT,
            dialect TEXT,
            method TEXT,
            path TEXT,
            model TEXT,
            key_id INTEGER,
            key_masked TEXT,
            status INTEGER,
            attempts INTEGER DEFAULT 0,
            attempts_detail TEXT,
            stream INTEGER DEFAULT 0,
            ttfb_ms REAL,
            duration_ms REAL,
            tokens_in INTEGER,
            tokens_out INTEGER,
            error_class TEXT,
            error_message TEXT,
            worker_pid INTEGER
        )
        """
    )
    db["requests"].create_index(["started_at"], index_name="requests_started_at")
    for column in ("model", "key_id", "user_id", "status"):
        db["requests"].create_index([column, "seq"], index_name=f"requests_{column}_seq")

    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL,
            level TEXT,
            message TEXT,
            request_id TEXT,
            status INTEGER,
            key_id INTEGER,
            model TEXT
        )
        """
    )
    db["events"].create_index(["ts"], index_name="events_ts")

    db.create_table(
        "users",
        {
            "id": "INTEGER", "label": "TEXT", "key_hash": "TEXT", "masked": "TEXT",
            "status": "TEXT", "created_at": "REAL", "updated_at": "REAL",
            "rpm_limit": "INTEGER", "tpd_limit": "INTEGER", "allowed_models": "TEXT",
        },
        pk="id",
        not_null=["label", "key_hash"],
        defaults={"status": "active"},
    )
    db["users"].create_index(["label"], index_name="users_label", unique=True)
    db["users"].create_index(["key_hash"], index_name="users_key_hash", unique=True)

    db.execute(
        """
        CREATE TABLE pins (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT UNIQUE NOT NULL,
            key_id INTEGER NOT NULL,
            created_at REAL
        )
        """
    )

    db.create_table(
        "workers",
        {
            "host": "TEXT", "pid": "INTEGER", "started_at": "REAL", "last_seen": "REAL",
            "version": "TEXT", "inflight": "INTEGER", "served": "INTEGER",
        },
        pk=("host", "pid"),
    )

    db.create_table("meta", {"key": "TEXT", "value": "TEXT"}, pk="key")
    # Signs upload-session tokens; shared by every worker because it lives in the file.
    db["meta"].insert({"key": "secret", "value": secrets.token_hex(32)})


def _cost(db: Database) -> None:
    """Add estimated cost: per request in dollars, per minute bucket in micro-dollars."""
    db.execute("ALTER TABLE requests ADD COLUMN cost_usd REAL")
    db.execute("ALTER TABLE stats_minute ADD COLUMN cost_micros INTEGER DEFAULT 0")


def _worker_state(db: Database) -> None:
    """Add what each worker says it is doing: up, or stopping (draining after SIGTERM)."""
    db.execute("ALTER TABLE workers ADD COLUMN state TEXT")


def _quotas(db: Database) -> None:
    """Add what the pool learns and counts about each key's quotas, shared by every worker.

    key_limits: per (key, model, kind) the limit Google named in a 429 (source 'learned')
    or an operator set (source 'operator'; model '' for every model); kind is rpm, rpd or
    tpm. quota_usage: per Pacific day, the running counters each worker process keeps for a
    (key, model) (user_id 0) or a user (key_id 0, model ''): its recent sends and input
    tokens in 5-second slots, and its totals for the day. `seq` orders the changes, so the
    pool reads only rows written since its last read.
    """
    db.execute(
        """
        CREATE TABLE key_limits (
            key_id INTEGER NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            value INTEGER NOT NULL,
            learned_at REAL,
            updated_at REAL,
            PRIMARY KEY (key_id, model, kind, source)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE quota_usage (
            day INTEGER NOT NULL,
            key_id INTEGER NOT NULL,
            model TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            worker TEXT NOT NULL,
            recent TEXT NOT NULL DEFAULT '',
            day_sends INTEGER NOT NULL DEFAULT 0,
            day_tokens_in INTEGER NOT NULL DEFAULT 0,
            day_tokens_out INTEGER NOT NULL DEFAULT 0,
            updated_at REAL,
            seq INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, key_id, model, user_id, worker)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX quota_usage_seq ON quota_usage (seq)")


# The unix time inside a trigger (SQLite has no such function before 3.38).
_NOW_SQL = "(julianday('now') - 2440587.5) * 86400.0"


def _pool_changes(db: Database) -> None:
    """Log which keys changed, so the pool reads only those instead of every key each second.

    Triggers append the key's id to key_changes whenever its row, its rests (key_health) or
    its limits (key_limits) change, whoever changes them (proxy, CLI, console, a hand-run
    UPDATE). Readers keep the highest seq they have seen. Expired rests are pruned, so
    key_health gets the index on cool_until its readers filter on; users one on updated_at.
    """
    db.execute(
        "CREATE TABLE key_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id INTEGER NOT NULL, ts REAL)"
    )
    log = f"INSERT INTO key_changes (key_id, ts) VALUES ({{ref}}.{{col}}, {_NOW_SQL});"
    triggers = [
        ("google_keys_added", "AFTER INSERT ON google_keys", "", "NEW", "id"),
        ("google_keys_changed",
         "AFTER UPDATE OF value, masked, label, status, invalid_reason, updated_at, rpm_cap ON google_keys",
         "", "NEW", "id"),
        ("google_keys_deleted", "AFTER DELETE ON google_keys", "", "OLD", "id"),
        ("key_health_added", "AFTER INSERT ON key_health", "", "NEW", "key_id"),
        ("key_health_changed", "AFTER UPDATE ON key_health", "", "NEW", "key_id"),
        # Pruning expired rests changes nothing the pool holds: only a running one counts.
        ("key_health_deleted", "AFTER DELETE ON key_health", f"WHEN OLD.cool_until > {_NOW_SQL}",
         "OLD", "key_id"),
        ("key_limits_added", "AFTER INSERT ON key_limits", "", "NEW", "key_id"),
        ("key_limits_changed", "AFTER UPDATE ON key_limits", "", "NEW", "key_id"),
        ("key_limits_deleted", "AFTER DELETE ON key_limits", "", "OLD", "key_id"),
    ]
    for name, event, when, ref, col in triggers:
        db.execute(f"CREATE TRIGGER {name} {event} {when} BEGIN {log.format(ref=ref, col=col)} END")
    db.execute("CREATE INDEX key_health_cool_until ON key_health (cool_until)")
    # The pool re-reads users when the newest updated_at moves.
    db.execute("CREATE INDEX users_updated_at ON users (updated_at)")


def _client(db: Database) -> None:
    """Add who sent a request: its address, and for a refused one the masked key it presented."""
    db.execute("ALTER TABLE requests ADD COLUMN remote_addr TEXT")
    db.execute("ALTER TABLE requests ADD COLUMN presented_key TEXT")


# stats_minute's key from 0007_hosts on: the host is part of it (see _hosts).
STATS_KEY: tuple[str, ...] = ("minute", "key_id", "model", "user_id", "dialect", "host")


def _hosts(db: Database) -> None:
    """Record which host wrote each request row, event and minute bucket (several hosts, one pool).

    The host joins stats_minute's primary key rather than living in a table of its own: each
    host's writer then upserts only its own buckets, so two hosts never wait on (or deadlock
    over) the same row, and every existing reader keeps summing over the groups it sums
    today. SQLite cannot change a primary key in place, so the table is rebuilt. Rows from
    before carry host '' (stats) or NULL (requests, events): written when there was one host.
    """
    db.execute("ALTER TABLE requests ADD COLUMN host TEXT")
    db.execute("ALTER TABLE events ADD COLUMN host TEXT")
    db.execute("CREATE INDEX requests_host_seq ON requests (host, seq)")
    columns = ", ".join(("minute", "key_id", "model", "user_id", "dialect", *STATS_COUNTERS))
    db.execute(
        "CREATE TABLE stats_minute_new (minute INTEGER, key_id INTEGER NOT NULL DEFAULT 0, "
        "model TEXT NOT NULL DEFAULT '', user_id INTEGER NOT NULL DEFAULT 0, "
        "dialect TEXT NOT NULL DEFAULT 'native', "
        + "".join(f"{c} INTEGER DEFAULT 0, " for c in STATS_COUNTERS)
        + "host TEXT NOT NULL DEFAULT '', "
        f"PRIMARY KEY ({', '.join(STATS_KEY)}))"
    )
    db.execute(f"INSERT INTO stats_minute_new ({columns}) SELECT {columns} FROM stats_minute")
    db.execute("DROP TABLE stats_minute")
    db.execute("ALTER TABLE stats_minute_new RENAME TO stats_minute")
    db.execute("CREATE INDEX stats_minute_key ON stats_minute (key_id, minute)")
    db.execute("CREATE INDEX stats_minute_user ON stats_minute (user_id, minute)")


# -- the same migrations, for PostgreSQL --------------------------------------------------------
# Same names, same tables and columns; the types PostgreSQL needs (double precision for
# SQLite's REAL, bigint for INTEGER, identity columns for AUTOINCREMENT) and plpgsql triggers.
_PG_NOW = "extract(epoch from clock_timestamp())"
_PG_INITIAL = [
    """CREATE TABLE google_keys (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, value TEXT NOT NULL, masked TEXT,
        label TEXT, status TEXT NOT NULL DEFAULT 'active', invalid_reason TEXT,
        invalid_at DOUBLE PRECISION, created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION,
        last_used_at DOUBLE PRECISION, last_error TEXT, rpm_cap BIGINT)""",
    "CREATE UNIQUE INDEX google_keys_value ON google_keys (value)",
    """CREATE TABLE key_health (
        key_id BIGINT, model TEXT, cool_until DOUBLE PRECISION, reason TEXT, last_error TEXT,
        updated_at DOUBLE PRECISION, PRIMARY KEY (key_id, model))""",
    """CREATE TABLE stats_minute (
        minute BIGINT, key_id BIGINT NOT NULL DEFAULT 0, model TEXT NOT NULL DEFAULT '',
        user_id BIGINT NOT NULL DEFAULT 0, dialect TEXT NOT NULL DEFAULT 'native', """
    + ", ".join(f"{c} BIGINT DEFAULT 0" for c in _INITIAL_COUNTERS)
    + ", PRIMARY KEY (minute, key_id, model, user_id, dialect))",
    "CREATE INDEX stats_minute_key ON stats_minute (key_id, minute)",
    "CREATE INDEX stats_minute_user ON stats_minute (user_id, minute)",
    """CREATE TABLE requests (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, id TEXT UNIQUE NOT NULL,
        started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION, user_id BIGINT, user_label TEXT,
        dialect TEXT, method TEXT, path TEXT, model TEXT, key_id BIGINT, key_masked TEXT,
        status BIGINT, attempts BIGINT DEFAULT 0, attempts_detail TEXT, stream BIGINT DEFAULT 0,
        ttfb_ms DOUBLE PRECISION, duration_ms DOUBLE PRECISION, tokens_in BIGINT, tokens_out BIGINT,
        error_class TEXT, error_message TEXT, worker_pid BIGINT)""",
    "CREATE INDEX requests_started_at ON requests (started_at)",
    *[f"CREATE INDEX requests_{c}_seq ON requests ({c}, seq)" for c in ("model", "key_id", "user_id", "status")],
    """CREATE TABLE events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts DOUBLE PRECISION, level TEXT,
        message TEXT, request_id TEXT, status BIGINT, key_id BIGINT, model TEXT)""",
    "CREATE INDEX events_ts ON events (ts)",
    """CREATE TABLE users (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, label TEXT NOT NULL,
        key_hash TEXT NOT NULL, masked TEXT, status TEXT DEFAULT 'active',
        created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION, rpm_limit BIGINT,
        tpd_limit BIGINT, allowed_models TEXT)""",
    "CREATE UNIQUE INDEX users_label ON users (label)",
    "CREATE UNIQUE INDEX users_key_hash ON users (key_hash)",
    """CREATE TABLE pins (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name TEXT UNIQUE NOT NULL,
        key_id BIGINT NOT NULL, created_at DOUBLE PRECISION)""",
    """CREATE TABLE workers (
        host TEXT, pid BIGINT, started_at DOUBLE PRECISION, last_seen DOUBLE PRECISION,
        version TEXT, inflight BIGINT, served BIGINT, PRIMARY KEY (host, pid))""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
]
_PG_STEPS: dict[str, list[str]] = {
    "0001_initial": _PG_INITIAL,
    "0002_cost": [
        "ALTER TABLE requests ADD COLUMN cost_usd DOUBLE PRECISION",
        "ALTER TABLE stats_minute ADD COLUMN cost_micros BIGINT DEFAULT 0",
    ],
    "0003_worker_state": ["ALTER TABLE workers ADD COLUMN state TEXT"],
    "0004_quotas": [
        """CREATE TABLE key_limits (
            key_id BIGINT NOT NULL, model TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL,
            source TEXT NOT NULL, value BIGINT NOT NULL, learned_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION, PRIMARY KEY (key_id, model, kind, source))""",
        """CREATE TABLE quota_usage (
            day BIGINT NOT NULL, key_id BIGINT NOT NULL, model TEXT NOT NULL, user_id BIGINT NOT NULL,
            worker TEXT NOT NULL, recent TEXT NOT NULL DEFAULT '', day_sends BIGINT NOT NULL DEFAULT 0,
            day_tokens_in BIGINT NOT NULL DEFAULT 0, day_tokens_out BIGINT NOT NULL DEFAULT 0,
            updated_at DOUBLE PRECISION, seq BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (day, key_id, model, user_id, worker))""",
        "CREATE INDEX quota_usage_seq ON quota_usage (seq)",
    ],
    "0005_pool_changes": [
        """CREATE TABLE key_changes (
            seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, key_id BIGINT NOT NULL,
            ts DOUBLE PRECISION)""",
        # TG_ARGV[0] names the column holding the key's id; a deleted rest counts only while
        # it was still running (as on SQLite).
        f"""CREATE FUNCTION log_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r jsonb;
        BEGIN
            IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
            IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'key_health'
               AND NOT coalesce((r ->> 'cool_until')::double precision > {_PG_NOW}, false) THEN
                RETURN NULL;
            END IF;
            -- Serialize writers of the log until they commit, so seq order is commit order
            -- and a reader's "seq > last seen" never skips a row committed late.
            PERFORM pg_advisory_xact_lock({LOCK_KEY_CHANGES});
            INSERT INTO key_changes (key_id, ts) VALUES ((r ->> TG_ARGV[0])::bigint, {_PG_NOW});
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER google_keys_added AFTER INSERT ON google_keys FOR EACH ROW "
        "EXECUTE FUNCTION log_key_change('id')",
        "CREATE TRIGGER google_keys_changed AFTER UPDATE OF value, masked, label, status, invalid_reason, "
        "updated_at, rpm_cap ON google_keys FOR EACH ROW EXECUTE FUNCTION log_key_change('id')",
        "CREATE TRIGGER google_keys_deleted AFTER DELETE ON google_keys FOR EACH ROW "
        "EXECUTE FUNCTION log_key_change('id')",
        *[f"CREATE TRIGGER {t}_{what} AFTER {op} ON {t} FOR EACH ROW EXECUTE FUNCTION log_key_change('key_id')"
          for t in ("key_health", "key_limits")
          for what, op in (("added", "INSERT"), ("changed", "UPDATE"), ("deleted", "DELETE"))],
        "CREATE INDEX key_health_cool_until ON key_health (cool_until)",
        "CREATE INDEX users_updated_at ON users (updated_at)",
    ],
    "0006_client": [
        "ALTER TABLE requests ADD COLUMN remote_addr TEXT",
        "ALTER TABLE requests ADD COLUMN presented_key TEXT",
    ],
    "0007_hosts": [
        "ALTER TABLE requests ADD COLUMN host TEXT",
        "ALTER TABLE events ADD COLUMN host TEXT",
        "CREATE INDEX requests_host_seq ON requests (host, seq)",
        "ALTER TABLE stats_minute ADD COLUMN host TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE stats_minute DROP CONSTRAINT stats_minute_pkey",
        f"ALTER TABLE stats_minute ADD PRIMARY KEY ({', '.join(STATS_KEY)})",
    ],
}
def _pg_step(name: str) -> Callable[[Database], None]:
    def run(db: Database) -> None:
        for sql in _PG_STEPS[name]:
            db.conn._live().execute(sql)  # DDL as written: no placeholder translation
        if name == "0001_initial":
            db.execute("INSERT INTO meta (key, value) VALUES ('secret', ?)", [secrets.token_hex(32)])
    return run


MIGRATIONS: list[Migration] = [
    ("0001_initial", _initial),
    ("0002_cost", _cost),
    ("0003_worker_state", _worker_state),
    ("0004_quotas", _quotas),
    ("0005_pool_changes", _pool_changes),
    ("0006_client", _client),
    ("0007_hosts", _hosts),
]


def known_names() -> list[str]:
    """Return the names of the migrations this code knows, in order."""
    return [name for name, _ in MIGRATIONS]


def applied(db: Database) -> list[str]:
    """Return the names of the migrations recorded in the database (empty if none)."""
    if not _has_migrations_table(db):
        return []
    return [r["name"] for r in fetch_all(db, "SELECT name FROM migrations ORDER BY applied_at, name")]


def pending(db: Database) -> list[str]:
    """Return the known migrations the database has not had yet."""
    done = set(applied(db))
    return [name for name in known_names() if name not in done]


def migrate(db: Database) -> list[str]:
    """Apply every pending migration in one write transaction; return the names applied.

    Safe to call from many processes at once: the first takes the write lock and migrates,
    the others then find nothing to do.
    """
    if _up_to_date(db):
        return []
    done: list[str] = []
    postgres = is_postgres(db)
    with transaction(db):
        if postgres:
            # Held to the end of this transaction: a second host waits here, then finds
            # every migration recorded.
            serialize(db, LOCK_MIGRATE)
        if not _has_migrations_table(db):
            if postgres:
                db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)")
            else:
                db.create_table("migrations", {"name": "TEXT", "applied_at": "REAL"}, pk="name")
        recorded = set(applied(db))
        _refuse_unknown(recorded)
        for name, step in MIGRATIONS:
            if name in recorded:
                continue
            (_pg_step(name) if postgres else step)(db)
            db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, now()))
            done.append(name)
    return done


def check_schema(db: Database) -> None:
    """Raise SchemaMissing or SchemaTooNew unless the database matches this code exactly."""
    recorded = set(applied(db))
    if not recorded:
        raise SchemaMissing(
            "database has no schema yet; start the proxy once (gemini-proxy serve) to create it"
        )
    _refuse_unknown(recorded)
    missing = [name for name in known_names() if name not in recorded]
    if missing:
        raise SchemaMissing(
            f"database needs migrations {', '.join(missing)}; start the proxy once (gemini-proxy serve) to apply them"
        )


def _up_to_date(db: Database) -> bool:
    """Tell, with one read and no lock, whether there is nothing to migrate."""
    recorded = set(applied(db))
    _refuse_unknown(recorded)
    return bool(recorded) and all(name in recorded for name in known_names())


def _refuse_unknown(recorded: set[str]) -> None:
    unknown = sorted(recorded - set(known_names()))
    if unknown:
        raise SchemaTooNew(
            f"database was migrated by a newer gemini-api-proxy ({', '.join(unknown)}); "
            "upgrade gemini-api-proxy to use it"
        )


def _has_migrations_table(db: Database) -> bool:
    if is_postgres(db):
        return db.execute("SELECT to_regclass('migrations')").fetchone()[0] is not None
    row = db.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
    ).fetchone()
    return row is not None
