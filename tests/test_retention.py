"""Retention pruning in small batches, online backup and integrity check from the CLI."""
import subprocess
import sys
import time

from conftest import ROOT
from proxy.store import db as store_db
from proxy.store.retention import Retention, close_interrupted, prune_once
from proxy.store.schema import migrate
from proxy.store.writer import Writer

DAY = 86400


def seeded(path, n_old=5000, n_new=100):
    db = store_db.open_db(path)
    migrate(db)
    now = time.time()
    db.conn.executemany("INSERT INTO requests (id, started_at, status) VALUES (?, ?, 200)",
                        [(f"old{i}", now - 40 * DAY, ) for i in range(n_old)]
                        + [(f"new{i}", now - 60) for i in range(n_new)])
    db.conn.executemany("INSERT INTO events (ts, level, message) VALUES (?, 'info', 'x')",
                        [(now - 40 * DAY,)] * 50 + [(now,)] * 5)
    db.conn.executemany("INSERT INTO stats_minute (minute, key_id, requests) VALUES (?, ?, 1)",
                        [(int((now - 500 * DAY) // 60), k) for k in range(30)]
                        + [(int(now // 60), k) for k in range(3)])
    return db, now


def counts(db):
    return {t: db[t].count for t in ("requests", "events", "stats_minute")}


def test_prune_drains_in_batches(tmp_path):
    db, now = seeded(tmp_path / "r.db")
    policy = Retention(batch=1000)
    passes = 0
    while prune_once(db, now, policy):
        passes += 1
    assert passes >= 5  # never one huge delete
    assert counts(db) == {"requests": 100, "events": 5, "stats_minute": 3}


def test_zero_days_keeps_everything(tmp_path):
    db, now = seeded(tmp_path / "r.db", n_old=10)
    assert prune_once(db, now, Retention(requests_days=0, events_days=0, stats_days=0)) == 0


def test_writer_prunes_in_the_background(tmp_path):
    path = tmp_path / "r.db"
    db, now = seeded(path, n_old=3000)
    writer = Writer(path, interval=0.02,
                    housekeeping=lambda conn: prune_once(conn, time.time(), Retention(batch=500)))
    writer.start()
    deadline = time.time() + 20
    while db["requests"].count > 100 and time.time() < deadline:
        time.sleep(0.1)
    writer.close()
    assert counts(db)["requests"] == 100


def test_close_interrupted_rows(tmp_path):
    db = store_db.open_db(tmp_path / "r.db")
    migrate(db)
    db.execute("INSERT INTO requests (id, started_at) VALUES ('inflight', ?)", [time.time() - 5])
    assert close_interrupted(db, time.time(), "here") == 1  # a row from before hosts: ours on SQLite
    row = next(db.query("select status, error_class from requests"))
    assert row == {"status": 499, "error_class": "interrupted"}


def test_close_interrupted_touches_only_this_hosts_rows(db_url):
    db = store_db.open_db(db_url)
    migrate(db)
    t = time.time() - 5
    db.conn.executemany("INSERT INTO requests (id, started_at, host, worker_pid) VALUES (?, ?, ?, ?)",
                        [("a1", t, "host-a", 11), ("a2", t, "host-a", 12), ("b1", t, "host-b", 11)])
    assert close_interrupted(db, time.time(), "host-a", worker_pid=11) == 1  # (host, pid), not pid
    assert close_interrupted(db, time.time(), "host-a") == 1
    open_rows = [r["id"] for r in db.query("SELECT id FROM requests WHERE status IS NULL")]
    assert open_rows == ["b1"]  # host-b is still serving it


def test_one_host_prunes_at_a_time_on_postgres(pg_url):
    from proxy.store.db import LOCK_RETENTION

    db, now = seeded(pg_url, n_old=10, n_new=1)
    other = store_db.open_db(pg_url)  # another host, in the middle of its own pass
    other.execute("SELECT pg_advisory_lock(?)", (LOCK_RETENTION,))
    assert prune_once(db, now, Retention()) == 0
    assert counts(db)["requests"] == 11
    other.execute("SELECT pg_advisory_unlock(?)", (LOCK_RETENTION,))
    assert prune_once(db, now, Retention()) > 0
    assert counts(db)["requests"] == 1
    # The lock is let go after each pass: the other host can take it now.
    assert other.execute("SELECT pg_try_advisory_lock(?)", (LOCK_RETENTION,)).fetchone()[0] is True


def cli(*args):
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], capture_output=True,
                          text=True, cwd=str(ROOT), timeout=60)


def test_db_backup_and_check(tmp_path):
    src = tmp_path / "live.db"
    seeded(src, n_old=2000)
    out = cli("db", "backup", str(tmp_path / "copy.db"), "--db", str(src))
    assert out.returncode == 0, out.stderr
    copy = store_db.open_db(tmp_path / "copy.db")
    assert counts(copy)["requests"] == 2100
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600
    again = cli("db", "backup", str(tmp_path / "copy.db"), "--db", str(src))
    assert again.returncode == 2 and "already exists" in again.stderr
    check = cli("db", "check", "--db", str(src))
    assert check.returncode == 0 and check.stdout.strip().endswith("ok")
    missing = cli("db", "check", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no database" in missing.stderr


def test_db_check_finds_corruption(tmp_path):
    path = tmp_path / "bad.db"
    db, _ = seeded(path, n_old=3000)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    for i in range(8192, min(len(data), 40960)):
        data[i] = 0x5A  # scribble over b-tree pages
    path.write_bytes(bytes(data))
    check = cli("db", "check", "--db", str(path))
    assert check.returncode == 1 and "problem(s) found" in check.stdout
    assert "Traceback" not in check.stderr
