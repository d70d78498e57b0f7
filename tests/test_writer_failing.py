"""A database that cannot take writes (disk full): rows are kept, retried, counted, and /ready says so.

SQLite's `max_page_count` makes the database "full" exactly as a full disk does (the same
SQLITE_FULL result code), without needing a small filesystem.
"""
from __future__ import annotations

import logging
import time

from proxy.store import Writer, open_db
from conftest import USER_KEY


def _fill(writer: Writer) -> None:
    """Make every further write that needs a new page fail with SQLITE_FULL."""
    assert writer.flush()
    conn = writer._db.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def _unfill(writer: Writer) -> None:
    writer._db.conn.execute("PRAGMA max_page_count = 1073741823")


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _rows(path) -> int:
    db = open_db(path, readonly=True)
    try:
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        db.close()


def _big_row(i: int) -> dict:
    return {"id": f"r{i:05d}", "started_at": float(i), "status": 200, "model": "m",
            "error_message": "x" * 2000}  # a few rows per page: the file must grow


def test_full_database_keeps_rows_and_catches_up(tmp_path, caplog):
    path = tmp_path / "keys.db"
    writer = Writer(path, interval=0.01)
    writer.start()
    _fill(writer)
    caplog.set_level(logging.ERROR, logger="proxy.store.writer")
    for i in range(150):
        writer.request_finished(_big_row(i))
    assert _wait_for(lambda: writer.failing)
    assert "full" in (writer.last_error or "")
    assert not writer.flush(timeout=0.3)  # nothing is committed while full
    failing_lines = [r for r in caplog.records if "cannot take writes" in r.getMessage()]
    assert len(failing_lines) == 1  # one line when it starts, not one per retry or per row
    _unfill(writer)
    assert writer.flush(timeout=15)
    assert not writer.failing and writer.dropped == 0
    writer.close()
    assert _rows(path) == 150


def test_queue_is_bounded_while_failing_and_drops_are_counted(tmp_path, caplog):
    path = tmp_path / "keys.db"
    writer = Writer(path, interval=0.01, max_batch=10, max_queue=50)
    writer.start()
    _fill(writer)
    caplog.set_level(logging.ERROR, logger="proxy.store.writer")
    for i in range(10):
        writer.request_finished(_big_row(i))
    assert _wait_for(lambda: writer.failing)
    for i in range(10, 200):
        writer.request_finished(_big_row(i))
    assert _wait_for(lambda: writer.dropped > 0)
    _unfill(writer)
    assert writer.flush(timeout=15)
    writer.close()
    kept = _rows(path)
    assert kept + writer.dropped == 200  # every row is either written or counted as dropped
    assert kept >= 50
    drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert drop_lines and len(drop_lines) < writer.dropped  # per batch, not per row


def test_close_on_a_failing_database_gives_up_in_time(tmp_path):
    writer = Writer(tmp_path / "keys.db", interval=0.01)
    writer.start()
    _fill(writer)
    for i in range(20):
        writer.request_finished(_big_row(i))
    assert _wait_for(lambda: writer.failing)
    started = time.monotonic()
    writer.close(timeout=2)
    assert time.monotonic() - started < 5
    assert not writer.alive and writer.dropped == 20


def test_ready_reports_a_failing_writer_until_it_writes_again(app_factory, fake):
    app = app_factory()
    st = app.extensions["proxy"]
    client = app.test_client()
    assert client.get("/ready").status_code == 200
    _fill(st.writer)
    for _ in range(30):
        r = client.post("/v1beta/models/gemini-2.5-flash:generateContent",
                        headers={"x-goog-api-key": USER_KEY},
                        json={"contents": [{"parts": [{"text": "hello " * 300}]}]})
        assert r.status_code == 200  # clients are still served from memory
    assert _wait_for(lambda: st.writer.failing)
    r = client.get("/ready")
    assert r.status_code == 503
    assert "not writable" in r.json["reason"] and "full" in r.json["reason"]
    _unfill(st.writer)
    assert st.writer.flush(timeout=15)
    assert client.get("/ready").status_code == 200
    assert _rows(st.settings.db_path) == 30
