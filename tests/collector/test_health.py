"""Per-feed health counters (collector.health)."""

from __future__ import annotations

import pytest

from collector.health import FeedHealth, HealthRegistry, is_stale

S = 1_000_000_000


def test_rolling_update_rate():
    h = FeedHealth("binance", "BTCUSDT", window_s=10, buckets=10)
    t0 = 1_000 * S
    for i in range(200):  # 20 updates/s for 10 s
        h.on_update(t0 + i * S // 20)
    assert h.updates == 200
    assert h.updates_per_s(t0 + 10 * S) == pytest.approx(20.0, rel=0.1)
    for i in range(50):  # then 5 updates/s for 10 s
        h.on_update(t0 + 10 * S + i * S // 5)
    assert h.updates_per_s(t0 + 20 * S) == pytest.approx(5.0, rel=0.15)
    assert h.updates_per_s(t0 + 60 * S) == 0.0  # window empties when the feed stops


def test_rate_for_a_young_feed_uses_its_age():
    h = FeedHealth(window_s=60)
    for i in range(10):
        h.on_update(i * S // 10)  # 10/s for 1 s
    assert h.updates_per_s(S) == pytest.approx(10.0, rel=0.15)


def test_counters_latency_and_staleness():
    h = FeedHealth("binance", "BTCUSDT", max_age_s=5)
    assert h.stale(now_ns=0) and h.staleness_s(0) is None
    h.on_update(ts_recv_ns=100 * S, ts_exchange_ns=100 * S - 40_000_000)
    h.on_gap()
    h.on_gap()
    h.on_resync()
    h.on_reconnect()
    h.on_crossed()
    snap = h.snapshot(now_ns=103 * S)
    assert snap["gaps"] == 2 and snap["resyncs"] == 1 and snap["reconnects"] == 1 and snap["crossed"] == 1
    assert snap["last_latency_ms"] == pytest.approx(40.0)
    assert snap["staleness_s"] == pytest.approx(3.0)
    assert snap["stale"] is False
    assert h.snapshot(now_ns=106 * S)["stale"] is True
    assert h.stale(now_ns=106 * S, max_age_s=10) is False
    assert snap["exchange"] == "binance" and snap["updates"] == 1


def test_injected_clock_is_used_without_now():
    now = [50 * S]
    h = FeedHealth(clock=lambda: now[0], max_age_s=1)
    h.on_update(50 * S)
    assert not h.stale()
    now[0] = 52 * S
    assert h.stale() and h.snapshot()["staleness_s"] == pytest.approx(2.0)


def test_is_stale_function():
    assert is_stale(None, 10 * S, 5)
    assert not is_stale(6 * S, 10 * S, 5)
    assert not is_stale(5 * S, 10 * S, 5)  # exactly max age is still fresh
    assert is_stale(4 * S, 10 * S, 5)
    with pytest.raises(ValueError):
        is_stale(0, 1, 0)
    with pytest.raises(ValueError):
        FeedHealth(max_age_s=-1)


def test_registry():
    reg = HealthRegistry(max_age_s=2)
    reg.feed("binance", "BTCUSDT").on_update(10 * S)
    reg.feed("okx", "BTC-USDT").on_update(7 * S)
    assert reg.feed("binance", "BTCUSDT") is reg.feed("binance", "BTCUSDT")
    assert reg.stale_feeds(11 * S) == [("okx", "BTC-USDT")]
    assert {s["exchange"] for s in reg.snapshot(11 * S)} == {"binance", "okx"}
