"""Small named values the whole installation shares (the upload-token secret)."""
from __future__ import annotations

import secrets

from sqlite_utils import Database


def get_secret(db: Database) -> str:
    """Return the installation's signing secret, creating it if an older database lacks it."""
    row = db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    if row:
        return row[0]
    value = secrets.token_hex(32)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)", [value])
    return db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]
