"""Everything SQL: schema and migrations, admin operations, views, and the batched writer.

Imports neither Flask, Textual nor requests, so the console and the CLI can use it alone.
"""
from __future__ import annotations

from .db import fetch_all, fetch_one, open_db, snapshot, transaction
from .events import add_event
from .keys import (
    add_key,
    disable_key,
    enable_key,
    find_key,
    list_keys,
    merge_env_keys,
    pool_view,
    remove_key,
    reset_key,
)
from .pins import lookup, pin
from .schema import MIGRATIONS, SchemaMissing, SchemaTooNew, check_schema, migrate
from .users import add_user, find_user, list_users, merge_env_users, remove_user, set_limits
from .util import (
    InvalidValue,
    KeyNotFound,
    NotFound,
    StoreError,
    UserNotFound,
    hash_user_key,
    mask_key,
    minute_of,
    next_pacific_midnight,
    now,
    valid_google_key,
)
from .writer import Writer

__all__ = [
    "MIGRATIONS", "InvalidValue", "KeyNotFound", "NotFound", "SchemaMissing", "SchemaTooNew",
    "StoreError", "UserNotFound", "Writer", "add_event", "add_key", "add_user", "check_schema",
    "disable_key", "enable_key", "fetch_all", "fetch_one", "find_key", "find_user",
    "hash_user_key", "list_keys", "list_users", "lookup", "mask_key", "merge_env_keys",
    "merge_env_users", "migrate", "minute_of", "next_pacific_midnight", "now", "open_db", "pin",
    "pool_view", "remove_key", "remove_user", "reset_key", "set_limits", "snapshot",
    "transaction", "valid_google_key",
]
