"""Write rows of the event log (what the console's Logs pane shows)."""
from __future__ import annotations

from sqlite_utils import Database

from .util import now, this_host


def add_event(
    db: Database,
    message: str,
    *,
    level: str = "info",
    key_id: int | None = None,
    model: str | None = None,
    request_id: str | None = None,
    status: int | None = None,
    ts: float | None = None,
    host: str = "",
) -> None:
    """Append one event (stamped with this host's name); joins the caller's transaction when one is open."""
    db.execute(
        "INSERT INTO events (ts, level, message, request_id, status, key_id, model, host) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (ts if ts is not None else now(), level, message, request_id, status, key_id, model,
         this_host(host)),
    )
