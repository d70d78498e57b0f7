"""Prometheus metrics, correct across gunicorn workers (prometheus_client multiprocess mode).

`gemini-proxy serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers
fork (proxy.serving.server; this module must not be imported before that); each worker then writes its
samples to memory-mapped files there and /metrics, in
whichever worker answers, adds them up. Without that variable (tests, one process) the
default in-process registry is used.
"""
from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any, Iterable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

from proxy.serving.multiproc import MULTIPROC_ENV
# Latency buckets around what matters here: sub-ms proxy overhead up to long generations.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("gemini_proxy_requests_total", "Requests answered, by dialect, model and "
                   "status class.", ["dialect", "model", "status_class"])
ATTEMPTS = Counter("gemini_proxy_upstream_attempts_total", "Upstream attempts by error class.",
                   ["error_class"])
DURATION = Histogram("gemini_proxy_request_duration_seconds", "Time from request to last byte.",
                     ["dialect"], buckets=_BUCKETS)
TTFB = Histogram("gemini_proxy_time_to_first_byte_seconds", "Time from request to the first "
                 "upstream byte.", ["dialect"], buckets=_BUCKETS)
TOKENS = Counter("gemini_proxy_tokens_total", "Tokens by direction (in/out), model and user key.",
                 ["direction", "model", "user"])
COST = Counter("gemini_proxy_cost_usd_total", "Estimated cost from the price table.",
               ["model", "user"])
KEYS = Gauge("gemini_proxy_keys", "Google keys by state.", ["state"],
             multiprocess_mode="livemostrecent")
COOLDOWNS = Gauge("gemini_proxy_cooldowns_active", "(key, model) pairs resting now.",
                  multiprocess_mode="livemostrecent")
QUOTA_LEFT = Gauge("gemini_proxy_daily_quota_remaining", "Requests left today (until midnight "
                   "Pacific) per model, across usable keys whose daily limit is known.",
                   ["model"], multiprocess_mode="livemostrecent")
QUOTA_LIMIT = Gauge("gemini_proxy_daily_quota_limit", "Daily request limits per model, added up "
                    "over usable keys whose limit is known (learned from 429s or set).",
                    ["model"], multiprocess_mode="livemostrecent")
NO_QUOTA = Gauge("gemini_proxy_keys_without_quota", "Usable keys whose tier has no quota for the "
                 "model today (Google said limit 0).", ["model"], multiprocess_mode="livemostrecent")
WRITER_QUEUE = Gauge("gemini_proxy_writer_queue_depth", "Writes waiting for the batched writer.",
                     multiprocess_mode="livesum")
WRITER_DROPPED = Gauge("gemini_proxy_writer_dropped_ops", "Writes the batched writer gave up on "
                       "since start (bad data, or a full queue while the database failed).",
                       multiprocess_mode="livesum")
INFLIGHT = Gauge("gemini_proxy_requests_in_flight", "Requests in flight (streams until done).",
                 multiprocess_mode="livesum")


_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """Return `metric.labels(*labels)`, remembered: the lookup costs more than the update."""
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


class Tally:
    """What requests add to the metrics, summed in this process and written in one go.

    In multiprocess mode every update is a locked write to a memory-mapped file, about ten
    per request; here a request costs one list append, and `flush` writes one update per
    label set. While `immediate` (tests, a process without gevent) every request is written
    at once; a gevent worker clears it and flushes every FLUSH_SECONDS on its hub, before
    answering /metrics and when it stops, so a scrape lags by at most that.
    """

    FLUSH_SECONDS = 0.5

    def __init__(self) -> None:
        self.immediate = True
        self._pending: list[tuple[Any, ...]] = []

    def add(self, dialect: str, model: str, user: str, status: int, outcomes: Iterable[str],
            duration: float, ttfb: float | None, tokens_in: int, tokens_out: int,
            cost: float) -> None:
        """Count one answered request (`outcomes`: each upstream attempt's error class)."""
        self._pending.append((dialect, model, user, status, tuple(outcomes), duration, ttfb,
                              tokens_in, tokens_out, cost))

    def flush(self, *, inflight: int, queue: int, dropped: int) -> None:
        """Write what was counted since the last flush, and the gauges given."""
        INFLIGHT.set(inflight)
        WRITER_QUEUE.set(queue)
        WRITER_DROPPED.set(dropped)
        pending, self._pending = self._pending, []
        if not pending:
            return
        sums: dict[tuple[Any, ...], float] = {}
        durations: dict[str, list[float]] = {}
        ttfbs: dict[str, list[float]] = {}
        for dialect, model, user, status, outcomes, duration, ttfb, tin, tout, cost in pending:
            model = model or "-"
            key = (REQUESTS, dialect, model, f"{status // 100}xx")
            sums[key] = sums.get(key, 0) + 1
            for outcome in outcomes:
                key = (ATTEMPTS, outcome)
                sums[key] = sums.get(key, 0) + 1
            durations.setdefault(dialect, []).append(duration)
            if ttfb is not None:
                ttfbs.setdefault(dialect, []).append(ttfb)
            if tin or tout:
                for key, n in (((TOKENS, "in", model, user), tin), ((TOKENS, "out", model, user), tout)):
                    sums[key] = sums.get(key, 0) + n
            if cost:
                key = (COST, model, user)
                sums[key] = sums.get(key, 0) + cost
        for (metric, *labels), amount in sums.items():
            child(metric, *labels).inc(amount)
        for metric, observed in ((DURATION, durations), (TTFB, ttfbs)):
            for dialect, values in observed.items():
                observe_all(child(metric, dialect), values)


def observe_all(histogram: Any, values: list[float]) -> None:
    """Observe every value in `values`: one write per bucket touched instead of two per value.

    Leans on prometheus_client's Histogram layout (`_upper_bounds`, non-cumulative
    `_buckets`, `_sum`); where that is missing, each value is observed as usual.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        i = bisect_left(bounds, value)  # the first bound >= value, as observe() picks it
        counts[i] = counts.get(i, 0) + 1
    total.inc(sum(values))
    for i, n in counts.items():
        buckets[i].inc(n)


TALLY = Tally()


def render() -> tuple[bytes, str]:
    """Return the exposition text for every worker, and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
