"""Bus throughput over the real RabbitMQ, both delivery classes, against naive per-message
blocking publisher confirms measured in the same run.

    python bench/bus_throughput.py [--url amqp://guest:guest@127.0.0.1:5672/%2F] [--n 20000]

Figures: msg/s published (state: until every message is confirmed by the broker;
market: until written), msg/s delivered end-to-end to a consumer, ratio vs the baseline.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthpilot import messages as m  # noqa: E402
from depthpilot.bus.rabbit import RabbitBus  # noqa: E402
from depthpilot.topology import MARKET_EXCHANGE, STATE_EXCHANGE, DeliveryClass, QueueDef  # noqa: E402


def naive_blocking_confirms(url: str, n: int, queue: str) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    body = m.encode(m.Notification(text="x"))
    props = pika.BasicProperties(delivery_mode=2)
    t0 = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("", queue, body, props)  # blocks until the broker confirms
    dt = time.perf_counter() - t0
    ch.queue_delete(queue)
    conn.close()
    return n / dt


def run_class(url: str, n: int, make_msg, qdef: QueueDef) -> tuple[float, float]:
    bus = RabbitBus(url, "bench").start()
    bus.declare(qdef)
    got = 0
    done = threading.Event()

    def handler(msg: m.Message, d) -> None:
        nonlocal got
        got += 1
        if got >= n:
            done.set()

    bus.subscribe(qdef, handler, dedup=False, prefetch=1000)
    time.sleep(0.5)
    msgs = [make_msg(i) for i in range(n)]
    t0 = time.perf_counter()
    for msg in msgs:
        bus.publish(msg, routing_key=qdef.bindings[0])
    assert bus.flush(120), "not all confirmed"
    pub_rate = n / (time.perf_counter() - t0)
    done.wait(120)
    e2e_rate = got / (time.perf_counter() - t0)
    bus.delete_queue(qdef)
    bus.close()
    return pub_rate, e2e_rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--naive-n", type=int, default=2000)
    a = ap.parse_args()
    uid = uuid.uuid4().hex[:6]

    base = naive_blocking_confirms(a.url, a.naive_n, f"bench.naive.{uid}")
    print(f"baseline  per-message blocking confirms : {base:10.0f} msg/s")

    rk_state = f"notify.bench{uid}"
    qs = QueueDef(f"bench.state.{uid}", STATE_EXCHANGE, (rk_state,), DeliveryClass.STATE, delivery_limit=5)
    pub, e2e = run_class(a.url, a.n, lambda i: m.Notification(text=str(i)), qs)
    print(
        f"state     async confirms (persistent)   : {pub:10.0f} msg/s confirmed ({pub / base:5.1f}x baseline), "
        f"{e2e:8.0f} msg/s consumed end-to-end ({e2e / base:5.1f}x)"
    )

    rk_market = f"trade.bench{uid}.BTCUSDT"
    qm = QueueDef(f"bench.market.{uid}", MARKET_EXCHANGE, (rk_market,), DeliveryClass.MARKET, max_length=10 * a.n)
    pub, e2e = run_class(
        a.url,
        a.n,
        lambda i: m.Trade(
            exchange="b", symbol="BTCUSDT", ts_exchange=i, ts_recv=i, price=6e4, size=0.1, side=m.Side.BUY
        ),
        qm,
    )
    print(
        f"market    transient, no confirm (Trade) : {pub:10.0f} msg/s published ({pub / base:5.1f}x baseline), "
        f"{e2e:8.0f} msg/s consumed end-to-end ({e2e / base:5.1f}x)"
    )

    rk_book = f"book.bench{uid}.BTCUSDT"
    qb = QueueDef(f"bench.book.{uid}", MARKET_EXCHANGE, (rk_book,), DeliveryClass.MARKET, max_length=10 * a.n)
    rng = np.random.default_rng(0)
    bids = np.column_stack([6e4 - np.arange(250) * 0.1, rng.random(250)])
    asks = np.column_stack([6e4 + 0.1 + np.arange(250) * 0.1, rng.random(250)])
    nb = a.n // 4
    pub, e2e = run_class(
        a.url,
        nb,
        lambda i: m.BookSnapshot(exchange="b", symbol="BTCUSDT", ts_exchange=i, ts_recv=i, seq=i, bids=bids, asks=asks),
        qb,
    )
    print(
        f"market    250-level BookSnapshot        : {pub:10.0f} msg/s published ({pub / base:5.1f}x baseline), "
        f"{e2e:8.0f} msg/s consumed end-to-end ({e2e / base:5.1f}x)"
    )


if __name__ == "__main__":
    main()
