"""/metrics across gunicorn workers, its access rule, /ready's reasons, cost estimates."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import GOOGLE_KEYS, USER_KEY, wait_for
from proxy.prices import Prices
from proxy.store import db as store_db

BODY = {"contents": [{"role": "user", "parts": [{"text": "measure me"}]}]}


def sample(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_add_up_across_workers(live_factory, fake):
    proxy = live_factory(workers=2, METRICS_TOKEN="scrape-token-1")
    fake.set_key(GOOGLE_KEYS[0], mode="invalid")
    n = 40

    def one(i):
        return requests.post(f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
                             json=BODY, headers={"x-goog-api-key": USER_KEY}, timeout=10).status_code

    with ThreadPoolExecutor(8) as ex:
        assert set(ex.map(one, range(n))) == {200}

    def scraped() -> str | None:
        # Each worker publishes every Tally.FLUSH_SECONDS; the one answering, at once.
        text = requests.get(proxy.url + "/metrics", timeout=5).text
        done = sample(text, "gemini_proxy_requests_total", dialect="native",
                      model="gemini-2.5-flash", status_class="2xx")
        assert done <= n
        return text if done == n else None

    text = wait_for(scraped, timeout=5)
    # requests already in flight when the first answer came back may meet the dead key too
    assert 1 <= sample(text, "gemini_proxy_upstream_attempts_total", error_class="key_dead") <= 8
    assert sample(text, "gemini_proxy_upstream_attempts_total", error_class="ok") == n
    assert sample(text, "gemini_proxy_request_duration_seconds_count", dialect="native") == n
    assert sample(text, "gemini_proxy_time_to_first_byte_seconds_count", dialect="native") == n
    assert sample(text, "gemini_proxy_tokens_total", direction="in", model="gemini-2.5-flash") > 0
    assert sample(text, "gemini_proxy_cost_usd_total", model="gemini-2.5-flash") > 0
    assert sample(text, "gemini_proxy_keys", state="dead") == 1
    assert sample(text, "gemini_proxy_keys", state="usable") == 2
    assert "gemini_proxy_writer_queue_depth" in text and "gemini_proxy_cooldowns_active" in text
    # through a reverse proxy (X-Forwarded-For) only the token opens it
    fwd = {"X-Forwarded-For": "203.0.113.7"}
    assert requests.get(proxy.url + "/metrics", headers=fwd, timeout=5).status_code == 403
    ok = requests.get(proxy.url + "/metrics", timeout=5,
                      headers={**fwd, "Authorization": "Bearer scrape-token-1"})
    assert ok.status_code == 200 and "gemini_proxy_requests_total" in ok.text
    proxy.stop()
    rows = list(store_db.open_db(proxy.db).query("select cost_usd from requests"))
    assert len(rows) == n and all(r["cost_usd"] > 0 for r in rows)


def _samples(registry) -> dict[str, float]:
    """Every sample of `registry` but the creation times, by name and labels."""
    return {f"{s.name}{sorted(s.labels.items())}": s.value for family in registry.collect()
            for s in family.samples if not s.name.endswith("_created")}


def test_a_tally_writes_what_one_update_per_request_would(monkeypatch):
    """Summed per label set and per bucket, the exposition is the same as updating at once."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from proxy import metrics

    def fresh() -> CollectorRegistry:
        registry = CollectorRegistry()
        for name, make in (("REQUESTS", lambda: Counter("r", "", ["dialect", "model", "status_class"],
                                                        registry=registry)),
                           ("ATTEMPTS", lambda: Counter("a", "", ["error_class"], registry=registry)),
                           ("DURATION", lambda: Histogram("d", "", ["dialect"], registry=registry,
                                                          buckets=metrics._BUCKETS)),
                           ("TTFB", lambda: Histogram("t", "", ["dialect"], registry=registry,
                                                      buckets=metrics._BUCKETS)),
                           ("TOKENS", lambda: Counter("k", "", ["direction", "model", "user"],
                                                      registry=registry)),
                           ("COST", lambda: Counter("c", "", ["model", "user"], registry=registry)),
                           ("INFLIGHT", lambda: Gauge("i", "", registry=registry)),
                           ("WRITER_QUEUE", lambda: Gauge("q", "", registry=registry)),
                           ("WRITER_DROPPED", lambda: Gauge("x", "", registry=registry))):
            monkeypatch.setattr(metrics, name, make())
        monkeypatch.setattr(metrics, "_children", {})
        return registry

    requests_seen = [
        ("native", "gemini-2.5-flash", "ann", 200, ["ok"], 0.051, 0.050, 10, 20, 0.0001),
        ("native", "gemini-2.5-flash", "ann", 200, ["key_dead", "ok"], 0.3, 0.29, 5, 0, 0.0),
        ("openai", "", "bob", 429, ["rate_limited"], 2.5, None, 0, 0, 0.0),
        ("native", "gemini-2.5-pro", "ann", 200, ["ok"], 0.005, 0.005, 1, 1, 0.00002),
        ("native", "gemini-2.5-flash", "ann", 502, ["upstream_error"], 400.0, 1.0, 0, 0, 0.0),
    ]
    direct = fresh()
    m = metrics
    for dialect, model, user, status, outcomes, duration, ttfb, tin, tout, cost in requests_seen:
        m.REQUESTS.labels(dialect, model or "-", f"{status // 100}xx").inc()
        for outcome in outcomes:
            m.ATTEMPTS.labels(outcome).inc()
        m.DURATION.labels(dialect).observe(duration)
        if ttfb is not None:
            m.TTFB.labels(dialect).observe(ttfb)
        if tin or tout:
            m.TOKENS.labels("in", model or "-", user).inc(tin)
            m.TOKENS.labels("out", model or "-", user).inc(tout)
        if cost:
            m.COST.labels(model or "-", user).inc(cost)
    m.INFLIGHT.set(3)
    expected = _samples(direct)

    tallied = fresh()
    tally = metrics.Tally()
    for seen in requests_seen[:2]:
        tally.add(*seen)
    tally.flush(inflight=1, queue=0, dropped=0)
    for seen in requests_seen[2:]:
        tally.add(*seen)
    tally.flush(inflight=3, queue=0, dropped=0)
    got = _samples(tallied)
    assert any(name.startswith("d_bucket") for name in expected)
    assert got == pytest.approx(expected)


def test_ready_says_why_not(app_factory, fake):
    client = app_factory(google_keys=[]).test_client()
    r = client.get("/ready")
    assert r.status_code == 503 and r.get_json()["reason"] == "no usable Google key"


def test_prices_longest_prefix_and_unknown_models():
    prices = Prices({"gemini-2.5-flash": (0.30, 2.50), "gemini-2.5-flash-lite": (0.10, 0.40)})
    assert prices.cost("gemini-2.5-flash-lite-preview", 1_000_000, 0) == 0.10
    assert prices.cost("gemini-2.5-flash", 1_000_000, 1_000_000) == 2.80
    assert prices.cost("mystery-model", 1000, 1000) == 0.0


def test_bundled_price_table_loads_from_any_folder(tmp_path, monkeypatch, caplog):
    """Under systemd the working directory is the state folder: the table comes with the package."""
    monkeypatch.chdir(tmp_path)
    for prices in (Prices.load(), Prices.load("")):
        assert prices.cost("gemini-2.5-pro", 1_000_000, 0) > 0
    assert not caplog.records


def test_unreadable_price_file_is_one_warning_and_no_estimates(tmp_path, caplog):
    missing = tmp_path / "missing.json"
    assert Prices.load(missing).cost("gemini-2.5-pro", 10, 10) == 0
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert str(missing) in caplog.text and "no cost estimates" in caplog.text
    caplog.clear()
    assert Prices.load(missing, quiet=True).cost("gemini-2.5-pro", 10, 10) == 0
    assert not caplog.records


def test_serve_warns_once_about_a_configured_price_file(live_factory, tmp_path):
    proxy = live_factory(workers=2, PRICES_FILE=str(tmp_path / "nope.json"))
    proxy.stop()
    assert proxy.logs().count("price table") == 1
