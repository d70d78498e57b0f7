"""The proxy on a shared PostgreSQL database: serving, the CLI, two hosts, start-up faults."""
from __future__ import annotations

import subprocess
import sys

import requests

from conftest import USER_KEY, LiveProxy, free_port
from pg import PASSWORD
from proxy.store import open_db
from proxy.store.schema import known_names


def gemini_proxy(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True, text=True,
                          timeout=60)


def ask(proxy: LiveProxy) -> requests.Response:
    return requests.post(f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
                         headers={"x-goog-api-key": USER_KEY},
                         json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=30)


def test_two_hosts_share_one_database_and_lose_no_row(tmp_path, fake, pg_url):
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    b = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-b").start()
    try:
        answers = [ask(p) for p in (a, b) * 5]
        assert [r.status_code for r in answers] == [200] * 10
    finally:
        assert a.stop() == 0 and b.stop() == 0
    db = open_db(pg_url)
    assert db.execute("SELECT count(*) FROM requests WHERE status = 200").fetchone()[0] == 10
    # Each row, bucket and heartbeat names the host that wrote it.
    by_host = dict(db.execute("SELECT host, count(*) FROM requests GROUP BY host").fetchall())
    assert by_host == {"host-a": 5, "host-b": 5}
    buckets = dict(db.execute("SELECT host, sum(requests) FROM stats_minute GROUP BY host").fetchall())
    assert buckets == {"host-a": 5, "host-b": 5}
    assert {r[0] for r in db.execute("SELECT host FROM workers").fetchall()} == {"host-a", "host-b"}
    # Both started at once on one database: the keys were merged once, not twice.
    assert db.execute("SELECT count(*) FROM google_keys").fetchone()[0] == 3
    for proxy in (a, b):
        assert PASSWORD not in proxy.logs()
        assert "***" in proxy.logs()
    listing = gemini_proxy("keys", "list", "--db", pg_url)
    assert listing.returncode == 0, listing.stderr
    assert PASSWORD not in listing.stdout + listing.stderr


def test_db_check_and_backup_on_postgres(pg_url):
    migrate_done = gemini_proxy("db", "migrate", "--db", pg_url)
    assert migrate_done.returncode == 0, migrate_done.stderr
    check = gemini_proxy("db", "check", "--db", pg_url)
    assert check.returncode == 0, check.stderr
    assert "connected: PostgreSQL" in check.stdout and known_names()[-1] in check.stdout
    assert "requests: 0 rows" in check.stdout
    backup = gemini_proxy("db", "backup", "--db", pg_url, "copy.dump")
    assert backup.returncode == 2
    assert "pg_dump --format=custom --file=copy.dump" in backup.stderr
    assert PASSWORD not in backup.stderr and "***" in backup.stderr


def test_unreachable_postgres_stops_the_start_with_one_line(tmp_path, fake):
    port = free_port()  # nothing listens there
    url = f"postgresql://proxy:{PASSWORD}@127.0.0.1:{port}/proxy"
    proxy = LiveProxy(tmp_path, fake.url, PROXY_DB=url)
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--env-file", ""], env=proxy.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "PostgreSQL" in lines[0]
    assert PASSWORD not in proc.stderr


def test_the_console_reads_and_acts_over_the_postgres_url(tmp_path, fake, pg_url):
    """`gemini-console --db postgresql://…` shows the traffic and manages keys like on SQLite."""
    import asyncio

    from console.app import ConsoleApp
    from console.panes import KeysPane, RequestsPane
    from console.table import KeyedTable

    proxy = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    for _ in range(3):
        r = requests.post(proxy.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                          headers={"x-goog-api-key": USER_KEY},
                          json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10)
        assert r.status_code == 200
    proxy.stop()

    async def go() -> None:
        app = ConsoleApp(pg_url, refresh=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            rows = app.query_one(RequestsPane).query_one(KeyedTable)
            deadline = asyncio.get_running_loop().time() + 10
            while rows.row_count < 3:
                assert asyncio.get_running_loop().time() < deadline, "no rows over PostgreSQL"
                await pilot.pause(0.1)
            await pilot.press("3")
            keys = app.query_one(KeysPane).query_one(KeyedTable)
            while keys.row_count < 3:
                assert asyncio.get_running_loop().time() < deadline, "no keys over PostgreSQL"
                await pilot.pause(0.1)
            for pane in ("4", "5", "2"):  # stats, users, logs read over PostgreSQL too
                await pilot.press(pane)
                await pilot.pause(0.3)
            assert not app.query_one("#status").render().plain.startswith(" cannot read")
            assert PASSWORD not in str(app.screen)

    asyncio.run(go())
    from console.reads import Reader

    reader = Reader(pg_url)
    for span in ("hour", "day", "week"):
        for group in ("key_id", "model", "user_id"):
            assert reader.stats(group, span).groups is not None


def test_a_start_closes_only_its_own_hosts_rows_in_flight(tmp_path, fake, pg_url):
    from proxy.store import migrate

    db = open_db(pg_url)
    migrate(db)
    # host-a crashed with a row in flight; host-b is serving one right now.
    db.execute("INSERT INTO requests (id, started_at, host, worker_pid) VALUES "
               "('a-left', 1, 'host-a', 1), ('b-serving', 1, 'host-b', 1)")
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    try:
        rows = dict(db.execute("SELECT id, error_class FROM requests WHERE id IN ('a-left', 'b-serving')"
                               ).fetchall())
        assert rows == {"a-left": "interrupted", "b-serving": None}
        assert "1 request(s) the last run left unfinished" in a.logs()
    finally:
        assert a.stop() == 0


def test_a_dead_key_found_by_one_host_is_not_used_by_the_other_a_second_later(tmp_path, fake, pg_url):
    import time

    dead = "fake-key-0001"
    fake.set_key(dead, mode="invalid")
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    b = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-b").start()
    try:
        found_at = None
        for _ in range(30):  # A tries keys until it meets the dead one (and retries past it)
            assert ask(a).status_code == 200
            if any(r["key"] == dead for r in fake.requests):
                found_at = time.monotonic()
                break
        assert found_at is not None
        # The propagation bound under test: B's next refresh after A's writer commits.
        time.sleep(max(0.0, found_at + 1.0 - time.monotonic()))
        fake.clear_requests()
        assert [ask(b).status_code for _ in range(15)] == [200] * 15
        assert fake.requests and all(r["key"] != dead for r in fake.requests)
    finally:
        assert a.stop() == 0 and b.stop() == 0


# ---- two hosts: cooldowns, user limits, uploads; PostgreSQL going away ----------------------

FLASH = "gemini-2.5-flash"


def key_id(db, suffix: str) -> int:
    """Return the id of the Google key whose masked form ends with `suffix`."""
    return db.execute("SELECT id FROM google_keys WHERE masked LIKE ?", (f"%{suffix}",)).fetchone()[0]


def until(check, timeout: float, what: str, step: float = 0.05):
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


def test_a_per_minute_cooldown_from_one_host_is_honoured_by_the_other_until_it_ends(
        tmp_path, fake, pg_url):
    """A key that answers A with a per-minute 429 (retryDelay 5 s) gets nothing from B for
    those 5 s (less the 1 s propagation bound), and B uses it again once they are over."""
    import time

    from proxy.store.limits import set_limit

    delay = 5.0
    hot = "fake-key-0001"
    # One send per 5 s window: the second send inside it is refused with retryDelay 5 s.
    fake.set_key(hot, rpm=1, rpm_window_s=delay, retry_delay_s=delay)
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    b = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-b").start()
    try:
        # The pool would also learn "1 request per minute" from the 429 and pace the key by it
        # for a whole minute; an operator's limit overrides that, so only the cooldown is tested.
        db = open_db(pg_url)
        set_limit(db, key_id(db, "0001"), "rpm", 1000, model=FLASH)
        refused_at = None
        for _ in range(60):  # A spreads over the keys until the hot one refuses (then retries past it)
            assert ask(a).status_code == 200
            if fake.refusals().get((hot, FLASH, "minute")):
                refused_at = time.monotonic()
                break
        assert refused_at is not None, "the hot key was never refused"
        # B's next refresh after A's writer commits (the bound of the dead-key test above).
        time.sleep(max(0.0, refused_at + 1.0 - time.monotonic()))
        fake.clear_requests()
        sent = 0
        while time.monotonic() < refused_at + delay - 0.5:  # the rest stays inside the cooldown
            assert ask(b).status_code == 200
            sent += 1
        assert sent >= 10 and fake.requests
        assert all(r["key"] != hot for r in fake.requests), "B sent to a key A had found resting"
        # Over: B sends to it again (and the fake's window has passed, so it answers).
        def b_used_hot() -> bool:
            assert ask(b).status_code == 200
            return any(r["key"] == hot for r in fake.requests)

        until(b_used_hot, 10.0, "B to use the key again after its cooldown", step=0.0)
    finally:
        assert a.stop() == 0 and b.stop() == 0


def test_a_users_rpm_limit_holds_across_two_hosts(tmp_path, fake, pg_url):
    """Requests spread over A and B get the user's limit of 200s in all, then 429s.

    Each host counts its own sends at once and learns the other's through the database:
    the other's writer batch (WRITER_INTERVAL) plus this pool's refresh (POOL_REFRESH), about
    1.2 s with the defaults and 0.25 s with the tests' 0.05 s + 0.2 s (proxy/store/quota_usage.py,
    README "How keys are chosen"). Requests here go out one per 0.4 s, alternating hosts, so each
    host has seen every send but the latest: at most one request past the limit may pass.
    """
    import time

    from proxy.store import migrate
    from proxy.store.users import merge_env_users, set_limits

    limit, spacing = 6, 0.4
    db = open_db(pg_url)
    migrate(db)
    merge_env_users(db, [USER_KEY])
    set_limits(db, db.execute("SELECT id FROM users").fetchone()[0], rpm=limit)
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    b = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-b").start()
    try:
        answers = []
        next_at = time.monotonic()
        for proxy in (a, b) * 8:  # 16 requests in about 6.4 s, well inside one minute
            time.sleep(max(0.0, next_at - time.monotonic()))  # pacing the load, not a wait to assert
            next_at += spacing
            answers.append(ask(proxy))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 429}, codes
        assert limit <= codes.count(200) <= limit + 1, codes
        assert codes[:limit] == [200] * limit, codes  # nothing is refused before the limit
        refused = next(r for r in answers if r.status_code == 429)
        assert f"limited to {limit} requests per minute" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        # Both hosts refused: the limit is the user's, not one host's.
        assert {p.url for p, r in zip((a, b) * 8, answers) if r.status_code == 429} == {a.url, b.url}
    finally:
        assert a.stop() == 0 and b.stop() == 0
    db = open_db(pg_url)
    assert db.execute("SELECT count(*) FROM requests WHERE status = 200").fetchone()[0] == codes.count(200)


UPLOAD_START = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": "5",
                "X-Goog-Upload-Header-Content-Type": "text/plain"}
FINISH = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}


def start_upload(proxy: LiveProxy) -> str:
    """Start a resumable upload through `proxy`; return the session URL it hands out."""
    resp = requests.post(f"{proxy.url}/upload/v1beta/files", json={"file": {"display_name": "x"}},
                         headers={**UPLOAD_START, "x-goog-api-key": USER_KEY}, timeout=30)
    assert resp.status_code == 200, resp.text
    url = resp.headers["x-goog-upload-url"]
    assert url.startswith(proxy.url + "/upload/v1beta/files?upload_token=")
    return url


def ask_about(proxy: LiveProxy, file: dict) -> requests.Response:
    return requests.post(f"{proxy.url}/v1beta/models/{FLASH}:generateContent",
                         headers={"x-goog-api-key": USER_KEY}, timeout=30,
                         json={"contents": [{"parts": [{"text": "what is in it?"}, {"fileData": {
                             "fileUri": file["uri"], "mimeType": "text/plain"}}]}]})


def test_a_file_uploaded_through_one_host_is_used_through_the_other_with_its_key(
        tmp_path, fake, pg_url):
    """The pin (file → key) and the upload sessions' signing secret live in the database."""
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    b = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-b").start()
    try:
        # Uploaded through A from start to end, then used through B at once: a pin is committed
        # before its name reaches the client, and B reads a fresh view for a name it lacks.
        done = requests.post(start_upload(a), data=b"hello", headers=FINISH, timeout=30)
        assert done.status_code == 200, done.text
        first = done.json()["file"]
        uploader = {r["key"] for r in fake.requests if r["path"].startswith("/upload/")}
        assert len(uploader) == 1
        fake.clear_requests()
        for _ in range(6):  # B's choice is random otherwise: six hits on one key of three is no luck
            assert ask_about(b, first).status_code == 200
            got = requests.get(f"{b.url}/v1beta/{first['name']}", headers={"x-goog-api-key": USER_KEY},
                               timeout=30)
            assert got.status_code == 200 and got.json()["name"] == first["name"]
        assert {r["key"] for r in fake.requests} == uploader

        # Started through A, finished through B: B verifies A's session token and sends the
        # bytes with the key that started the session; then A uses the file B's answer pinned.
        fake.clear_requests()
        session = start_upload(a)
        started_with = {r["key"] for r in fake.requests}
        done = requests.post(session.replace(a.url, b.url), data=b"hello", headers=FINISH, timeout=30)
        assert done.status_code == 200, done.text
        second = done.json()["file"]
        assert {r["key"] for r in fake.requests} == started_with and len(started_with) == 1
        fake.clear_requests()
        for _ in range(6):
            assert ask_about(a, second).status_code == 200
        assert {r["key"] for r in fake.requests} == started_with
    finally:
        assert a.stop() == 0 and b.stop() == 0
    pins = dict(open_db(pg_url).execute("SELECT name, key_id FROM pins").fetchall())
    assert set(pins) == {first["name"], second["name"]}


def test_a_postgres_restart_under_load_loses_no_request_row(tmp_path, fake, pg_url, pg_cluster):
    """Every request a client got an answer for during a restart ends up with its row.

    The writer keeps its queue while the server is away and reconnects when it is back.
    """
    import threading

    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    answered: list[tuple[str, int]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                r = ask(a)
            except requests.RequestException:
                continue  # no answer: nothing is owed a row
            answered.append((r.headers["X-Request-Id"], r.status_code))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        until(lambda: len(answered) >= 20, 15.0, "traffic before the restart")
        pg_cluster.restart()
        restarted = len(answered)
        until(lambda: len(answered) >= restarted + 20, 15.0, "traffic after the restart")
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert {status for _, status in answered} == {200}
        until(lambda: requests.get(a.url + "/ready", timeout=5).ok, 15.0, "/ready after the restart")
    finally:
        stop.set()
        assert a.stop() == 0
    rows = dict(open_db(pg_url).execute("SELECT id, status FROM requests").fetchall())
    missing = [rid for rid, _ in answered if rid not in rows]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"
    assert all(rows[rid] == status for rid, status in answered)
    # Whether or not a batch met the closed connection, the writer gave nothing up.
    assert "store writer: dropped" not in a.logs()
    assert "cannot take writes" not in a.logs() or "store writer: writing again" in a.logs()


def test_ready_says_the_database_is_unreachable_while_postgres_is_down(tmp_path, fake, pg_url, pg_cluster):
    """PostgreSQL stopped: /ready turns 503 naming the database, requests are still served
    from the pool in memory, and /ready is 200 again once the server is back."""
    a = LiveProxy(tmp_path, fake.url, PROXY_DB=pg_url, PROXY_HOST_NAME="host-a").start()
    try:
        until(lambda: requests.get(a.url + "/ready", timeout=5).ok, 10.0, "/ready before the stop")
        pg_cluster.stop()
        try:
            [down] = until(lambda: [r for r in [requests.get(a.url + "/ready", timeout=5)]
                                    if r.status_code == 503], 10.0, "/ready to report the database")
            reason = down.json()["reason"]
            assert "database" in reason and "unreachable" in reason, reason
            assert PASSWORD not in down.text
            assert [ask(a).status_code for _ in range(5)] == [200] * 5
            assert requests.get(a.url + "/ready", timeout=5).status_code == 503
        finally:
            pg_cluster.resume()
        until(lambda: requests.get(a.url + "/ready", timeout=5).ok, 15.0, "/ready after the restart")
    finally:
        assert a.stop() == 0
    assert open_db(pg_url).execute("SELECT count(*) FROM requests WHERE status = 200").fetchone()[0] == 5


def test_the_writer_keeps_its_ops_while_it_cannot_even_reconnect(pg_url, pg_cluster):
    """Down for several retries (each reconnect refused) the writer drops nothing, says it is
    unreachable, and writes everything once the server is back."""
    from proxy.store.writer import Writer

    w = Writer(pg_url, interval=0.05)
    w.start()
    try:
        w.request_finished({"id": "before", "started_at": 1.0, "status": 200})
        assert w.flush(timeout=10)
        pg_cluster.stop()
        try:
            for i in range(5):
                w.request_finished({"id": f"down-{i}", "started_at": 2.0, "status": 200})
            until(lambda: w.failing, 10.0, "the writer to notice")
            # The first failure is the lost connection; later retries must reconnect, and fail.
            until(lambda: "cannot reach PostgreSQL" in (w.last_error or ""), 10.0, "a refused reconnect")
            assert w.dropped == 0 and "unreachable" in (w.problem or "")
        finally:
            pg_cluster.resume()
        assert w.flush(timeout=15) and not w.failing and w.dropped == 0
    finally:
        w.close()
    ids = {r[0] for r in open_db(pg_url).execute("SELECT id FROM requests").fetchall()}
    assert ids == {"before", *(f"down-{i}" for i in range(5))}
