"""`gemini-proxy db …`: migrate, back up and check the database."""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys

from proxy.cli.admin import add_db_options, db_path
from proxy.store.pg import is_url


def _existing(args: argparse.Namespace) -> str | None:
    """Return the database path, or say there is none there (and return None)."""
    path = db_path(args)
    if is_url(path) or os.path.exists(path):
        return path
    print(f"gemini-proxy: no database at {path}; start the proxy once (gemini-proxy serve), "
          "or pass --db", file=sys.stderr)
    return None


def cmd_migrate(args: argparse.Namespace) -> int:
    from proxy.store import db as store_db, schema

    path = db_path(args) if args.create else _existing(args)
    if path is None:
        return 2
    db = store_db.open_db(path)
    applied = schema.migrate(db)
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied
          else "database is up to date")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from proxy.store import db as store_db
    from proxy.store.maintenance import backup

    path = _existing(args)
    if path is None:
        return 2
    if is_url(path):
        from proxy.store.maintenance import pg_dump_command

        print("gemini-proxy: on PostgreSQL, back up with pg_dump (it copies a consistent snapshot "
              "while the proxy keeps writing); give it the password through PGPASSWORD or ~/.pgpass:\n"
              f"  {pg_dump_command(path, args.dest)}", file=sys.stderr)
        return 2
    db = store_db.open_db(path, readonly=True)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rcopying {done}/{total} pages", end="", file=sys.stderr, flush=True)

    try:
        dest = backup(db, args.dest, progress=progress)
    except FileExistsError as exc:
        print(f"gemini-proxy: {exc}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"backed up {path} to {dest} ({dest.stat().st_size} bytes)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from proxy.store import db as store_db
    from proxy.store.maintenance import integrity_check

    path = _existing(args)
    if path is None:
        return 2
    if is_url(path):
        from proxy.store import StoreError
        from proxy.store.maintenance import pg_check

        try:
            for line in pg_check(store_db.open_db(path)):
                print(line)
        except StoreError as exc:
            print(f"gemini-proxy: {exc}", file=sys.stderr)
            return 1
        print("ok")
        return 0
    try:
        problems = integrity_check(store_db.open_db(path, readonly=True))
    except sqlite3.DatabaseError as exc:  # too damaged even to check page by page
        problems = [f"the database cannot be read: {exc}"]
    for p in problems:
        print(p)
    print("ok" if not problems else f"{len(problems)} problem(s) found")
    return 0 if not problems else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `db migrate|backup|check` to the main parser."""
    p = sub.add_parser("db", help="migrate, back up or check the database",
                       description="Maintain the database (PROXY_DB: a SQLite file, default data/keys.db, "
                                   "or a postgresql:// URL).")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = dsub.add_parser("migrate", help="apply pending migrations",
                        description="Apply pending migrations to an existing database (the "
                                    "proxy also does this at start).")
    q.add_argument("--create", action="store_true",
                   help="create the database if there is none (before the first start)")
    q.set_defaults(func=cmd_migrate)
    add_db_options(q)
    q = dsub.add_parser("check", help="run integrity checks (exit 1 if any fail)",
                        description="Run integrity checks (exit 1 if any fail).")
    q.set_defaults(func=cmd_check)
    add_db_options(q)
    q = dsub.add_parser("backup", help="make a consistent copy while the proxy runs",
                        description="Copy the database online with SQLite's backup API; safe "
                                    "while the proxy is serving.")
    q.add_argument("dest", metavar="PATH", help="file to create (must not exist)")
    q.set_defaults(func=cmd_backup)
    add_db_options(q)
