"""Recent usage the pool needs to enforce limits across worker processes."""
from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from .db import fetch_all
from .util import pacific_day_start

WINDOW = 60.0


def recent_usage(db: Database, now: float, pid: int) -> dict[str, Any]:
    """Return what other workers sent in the last minute, and tokens used today.

    Only for keys with an RPM cap and users with limits, so the read stays small. Sends of
    process `pid` are left out: that worker counts its own in memory, without lag.
    Tokens today count from midnight Pacific, when Google's daily quotas reset.
    """
    since = now - WINDOW
    key_sends = fetch_all(db, """
        SELECT key_id, model, started_at FROM requests
        WHERE started_at > ? AND worker_pid != ?
          AND key_id IN (SELECT id FROM google_keys WHERE rpm_cap IS NOT NULL)""", (since, pid))
    user_sends = fetch_all(db, """
        SELECT user_id, started_at FROM requests
        WHERE started_at > ? AND worker_pid != ?
          AND user_id IN (SELECT id FROM users WHERE rpm_limit IS NOT NULL AND status = 'active')
        """, (since, pid))
    user_tokens = fetch_all(db, """
        SELECT user_id, SUM(tokens_in + tokens_out) AS tokens FROM stats_minute
        WHERE minute >= ?
          AND user_id IN (SELECT id FROM users WHERE tpd_limit IS NOT NULL AND status = 'active')
        GROUP BY user_id""", (int(pacific_day_start(now) // 60),))
    return {"key_sends": key_sends, "user_sends": user_sends, "user_tokens": user_tokens,
            "usage_at": now}
