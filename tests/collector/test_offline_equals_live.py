"""Offline (``depthpilot features build``) and live (collector + features services over the
real RabbitMQ) give identical books and feature rows for the same recording: one replay
reader, one builder, one sync rule, one feature engine."""

from __future__ import annotations

import gzip
import json
import threading
import time

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.settings import load_settings
from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
from features.spec import FeatureSpec, feature_names
from tests.collector.venue_data import SPOT, raw_files

DEPTH = 25


def test_offline_features_build_equals_live_services_over_rabbitmq(amqp_url, uid, tmp_path):
    from collector.service import CollectorService
    from depthpilot_cli.main import app
    from features.io import binance_book_messages
    from features.service import FeaturesService

    clip = tmp_path / uid  # a random name: nothing may depend on it
    with gzip.open(raw_files(SPOT)[0], "rb") as fin, gzip.open(clip, "wb", compresslevel=1) as fout:
        for _, line in zip(range(6000), fin):
            fout.write(line)
    spec = FeatureSpec(depths=(5, 10, 20, 25), interval_s=1.0)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))

    # ---- offline: the CLI
    out = tmp_path / "features.parquet"
    r = CliRunner().invoke(
        app,
        [
            "features",
            "build",
            "--books",
            str(clip),
            "--kind",
            "snapshot",
            "--depth",
            str(DEPTH),
            "--spec",
            str(spec_file),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    offline = pd.read_parquet(out)
    off_books = {s.seq: s for s in binance_book_messages(clip, DEPTH) if s.valid}
    assert len(off_books) > 500, len(off_books)

    # ---- live: collector (replay) -> RabbitMQ -> features service
    settings = load_settings(
        AMQP_URL=amqp_url,
        COLLECTOR_SOURCE="replay",
        REPLAY_PATHS=str(clip),
        REPLAY_SPEED="20",
        SNAPSHOT_RATE_HZ="1000",
        BOOK_DEPTH=str(DEPTH),
        FEATURES_SPEC_FILE=str(spec_file),
        FEATURES_EMIT="snapshot",
    )
    fbus = connect_bus(amqp_url, "features").start()
    for q in ("features.book", "features.trades"):
        fbus.purge(q)  # nothing another run left behind
    watch = connect_bus(amqp_url, "watch").start()
    books: list[m.BookSnapshot] = []
    vectors: list[m.FeatureVector] = []
    lock = threading.Lock()

    def on_msg(msg, _d):
        with lock:
            if isinstance(msg, m.BookSnapshot):
                books.append(msg)
            elif isinstance(msg, m.FeatureVector) and msg.interval == "":
                vectors.append(msg)

    q = QueueDef(
        f"t.offline_live.{uid}",
        MARKET_EXCHANGE,
        ("book.binance.BTCUSDT", "features.binance.BTCUSDT"),
        DeliveryClass.MARKET,
        max_length=1_000_000,
    )
    cbus = connect_bus(amqp_url, "collector").start()
    feats = FeaturesService(settings, fbus, None)
    coll = CollectorService(settings, cbus, None)
    try:
        watch.subscribe(q, on_msg)
        feats.start()
        time.sleep(0.3)
        coll.start()
        assert coll.finished.wait(60), "replay did not finish"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            with lock:
                if len(vectors) >= len(off_books) - 5:
                    break
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        coll.stop()
        feats.stop()
        watch.delete_queue(q)
        for b in (cbus, fbus, watch):
            b.close()
    assert coll.problems() == []

    # ---- books: every live valid book equals the offline book of the same update id
    live_books = [b for b in books if b.valid]
    assert len(live_books) >= 0.99 * len(off_books), (len(live_books), len(off_books))
    for b in live_books:
        o = off_books[b.seq]
        assert np.array_equal(b.bids, o.bids) and np.array_equal(b.asks, o.asks), b.seq
        assert (b.ts_exchange, b.size_unit) == (o.ts_exchange, o.size_unit)

    # ---- feature rows: the live vector at each time equals the offline row
    names = feature_names(spec)
    off = offline.dropna(subset=names, how="all").set_index("ts")
    assert len(vectors) >= 0.99 * len(off), (len(vectors), len(off))
    X_live = np.stack([v.values for v in vectors])
    X_off = off.loc[[v.ts for v in vectors], names].to_numpy(np.float64)
    assert X_live.shape == X_off.shape
    assert np.allclose(X_live, X_off, rtol=1e-9, atol=0.0, equal_nan=True)
