"""Candle history (collector.history, `depthpilot history klines`) through the REAL ccxt client
against a local fake Binance klines endpoint serving real 1-minute candles."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from collector.history import find_gaps, kline_rows, last_open_time, timeframe_ms
from depthpilot_cli.main import app
from features.io import load_klines
from tests.collector.fakes.data import fixture_json
from tests.collector.fakes.http_server import FakeExchangeHTTP
from tests.collector.fakes.klines import (
    INFO,
    KLINES,
    BinanceKlines,
    ServerThread,
    real_klines,
)

pytestmark = pytest.mark.timeout(60)


def test_pure_rows_gaps_and_resume_point():
    assert timeframe_ms("1m") == 60_000 and timeframe_ms("4h") == 4 * 3_600_000
    with pytest.raises(ValueError, match="--interval: not a timeframe"):
        timeframe_ms("1x")
    rows = kline_rows([[1733007600000, 96466.11, 96495.52, 96440.0, 96440.0, 6.6158]], 60_000)
    assert rows == [
        ("1733007600000", "96466.11", "96495.52", "96440", "96440", "6.6158", "1733007659999", "", "", "", "", "")
    ]
    gaps = find_gaps([0, 60_000, 240_000, 300_000], 60_000, prev=-60_000)
    assert [(g.after_ms, g.before_ms, g.missing) for g in gaps] == [(60_000, 240_000, 2)]
    assert "2 candle(s) missing" in str(gaps[0])
    assert last_open_time("open_time,open\n1,2,3,4,5,6,7,,,,,\n60001,2,3,4,5,6,7,,,,,\n6000") == 60001


def _run(base_url: str, out, *args: str):
    return CliRunner().invoke(
        app,
        [
            "history",
            "klines",
            "--exchange",
            "binance",
            "--symbol",
            "BTCUSDT",
            "--out",
            str(out),
            "--limit",
            "300",
            "--quiet",
            *args,
        ],
        env={"CCXT_API_BASE_URL": base_url, "AMQP_URL": "memory://", "MONGO_URL": "mongomock://"},
    )


def test_paged_download_with_a_429_resumes_and_equals_the_served_candles(tmp_path):
    served = real_klines(1500)
    missing = {served[700][0], served[701][0]}  # the exchange itself has no candles for two minutes
    served_rows = [r for r in served if r[0] not in missing]
    srv = FakeExchangeHTTP({INFO: fixture_json("binance_exchange_info.json")})
    route = BinanceKlines(served_rows, on_request=lambda n: srv.fail(KLINES, "429") if n == 2 else None)
    srv.routes[KLINES] = route
    t0, t_end = served[0][0], served[-1][0] + 60_000
    out = tmp_path / "BTCUSDT_1m.csv"
    with ServerThread(srv) as th:
        # first run stops part-way (--until), as an interrupted download would
        r1 = _run(th.base_url, out, "--since", str(t0 * 10**6), "--until", str((t0 + 900 * 60_000) * 10**6))
        assert r1.exit_code == 0, r1.output
        n1 = len(pd.read_csv(out))
        assert n1 == 900 - 2, (r1.output, route.asked)
        # second run: same --since, continues after the last candle in the file
        r2 = _run(th.base_url, out, "--since", str(t0 * 10**6), "--until", str(t_end * 10**6))
        assert r2.exit_code == 0, r2.output
    hits = srv.hits(KLINES)
    assert [h.answered for h in hits].count("429") == 1 and "1 retries" in r1.output  # backed off, went on
    assert int(hits[-1].query["startTime"]) > t0 + 899 * 60_000  # resumed, did not start over
    assert "1 gaps" in r1.output and "2 candle(s) missing" in r1.output and "0 gaps" in r2.output
    df = pd.read_csv(out)
    assert list(df.columns) == [
        "open_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "close_time",
        "quote_volume",
        "count",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "ignore",
    ]
    assert df["open_time"].tolist() == [r[0] for r in served_rows]  # every served candle once, in order
    for col, i in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
        assert df[col].tolist() == [float(r[i]) for r in served_rows], col
    assert df["close_time"].tolist() == [r[6] for r in served_rows]
    k = load_klines(out)  # the features loader reads what we wrote
    assert len(k["close"]) == len(served_rows)


def test_history_errors_are_one_line(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("not,a,kline\n")
    r = CliRunner().invoke(
        app,
        [
            "history",
            "klines",
            "--exchange",
            "binance",
            "--symbol",
            "BTCUSDT",
            "--since",
            "2024-12-01",
            "--out",
            str(bad),
        ],
    )
    assert r.exit_code == 2 and "holds no kline line to resume from" in r.output
    r = CliRunner().invoke(
        app,
        [
            "history",
            "klines",
            "--exchange",
            "nosuch",
            "--symbol",
            "X",
            "--since",
            "2024-12-01",
            "--out",
            str(tmp_path / "y.csv"),
        ],
    )
    assert r.exit_code == 2 and "unknown exchange" in r.output
