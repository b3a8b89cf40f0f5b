"""End-to-end latency of the pipeline: the collector has a book -> the predictor made a signal
(trace stamps carried along the messages), replaying the real Binance spot recording through
collector, features and predictor. Measured over the real RabbitMQ and, as the baseline, over
the in-memory bus in the same run.

    python bench/pipeline_latency.py [--seconds 20] [--speed 5] [--url amqp://guest:guest@127.0.0.1:5672/%2F]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.service import CollectorService  # noqa: E402
from depthpilot.bus import connect_bus  # noqa: E402
from depthpilot.settings import load_settings  # noqa: E402
from depthpilot.store import Store  # noqa: E402
from features.service import FeaturesService  # noqa: E402
from predictor.service import PredictorService  # noqa: E402


def run(url: str, seconds: float, speed: float) -> dict[str, float]:
    os.environ["DEPTHPILOT_ENV_FILE"] = ""
    settings = load_settings(AMQP_URL=url, COLLECTOR_SOURCE="replay", REPLAY_SPEED=str(speed), REPLAY_LOOP="true")
    store = Store.connect(f"mongomock://{uuid.uuid4().hex}", "bench", snapshot_ttl_s=None)
    services, buses = [], []
    for cls in (PredictorService, FeaturesService, CollectorService):
        bus = connect_bus(url, cls.name).start()
        for q in ("features.book", "features.trades", "predictor.features"):
            bus.purge(q)  # drop what earlier runs left in the shared queues
        svc = cls(settings, bus, store)
        svc.start()
        services.append(svc)
        buses.append(bus)
    time.sleep(seconds)
    stats = services[0].stats()
    for svc, bus in zip(services, buses):
        svc.stop()
        bus.close()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--speed", type=float, default=5)
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    a = ap.parse_args()
    base = run(f"memory://{uuid.uuid4().hex[:8]}", a.seconds, a.speed)
    real = run(a.url, a.seconds, a.speed)
    for name, st in (("in-memory bus (baseline)", base), ("RabbitMQ", real)):
        print(
            f"{name:26s}: {st['signals']:6.0f} signals, book->signal p50 {st['latency_ms_p50']:6.2f} ms, "
            f"p99 {st['latency_ms_p99']:6.2f} ms"
        )
    print(
        f"ratio RabbitMQ / in-memory: p50 {real['latency_ms_p50'] / base['latency_ms_p50']:.2f}x, "
        f"p99 {real['latency_ms_p99'] / base['latency_ms_p99']:.2f}x"
    )


if __name__ == "__main__":
    main()
