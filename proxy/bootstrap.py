"""Get the database ready before serving: migrate, merge keys from the settings."""
from __future__ import annotations

from proxy.settings import Settings


def prepare_database(settings: Settings) -> bytes:
    """Create or migrate the database, merge keys from the settings; return the signing secret.

    Idempotent: every worker runs it at start, and running `serve` twice adds nothing twice.
    """
    from proxy.store import db as store_db, keys, meta, schema, users

    db = store_db.open_db(settings.db_path)
    try:
        schema.migrate(db)
        keys.merge_env_keys(db, settings.google_keys, settings.remove_google_keys)
        users.merge_env_users(db, settings.user_keys)
        secret = meta.get_secret(db).encode()
    finally:
        db.close()
    return secret
