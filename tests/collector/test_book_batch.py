"""The batch book rebuild (collector.binance_batch + collector.book_kernel) equals the collector's
replay (BinanceRecordingReplay + backtest.data._stack) bit for bit: on every raw Binance
recording under the data directory, and on generated recordings full of gaps, out-of-order,
duplicate and stale diffs, resyncs, stale snapshots, crossed books and odd numbers."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from backtest.data import Books, _stack, load_recording
from collector.binance_batch import rebuild_recording
from collector.text_kernels import parse_levels
from collector.replay import BinanceRecordingReplay
from depthpilot.paths import data_dir


def replay_books(path: Path, depth: int) -> Books:
    return _stack(BinanceRecordingReplay(path, depth=depth, trades=False), depth, str(path))


def assert_same(fast: Books, slow: Books) -> None:
    assert (fast.exchange, fast.symbol) == (slow.exchange, slow.symbol)
    for name in ("ts", "valid", "bids", "asks"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if a.dtype == np.float64:  # bit for bit (NaN padding included)
            a, b = a.view(np.int64), b.view(np.int64)
        assert np.array_equal(a, b), name


def raw_recordings() -> list[Path]:
    root = data_dir()
    found = sorted(p for p in root.glob("binance-*/raw") if p.is_dir() and any(p.glob("*.gz"))) if root.is_dir() else []
    return found


def test_every_raw_binance_recording_equals_the_replay() -> None:
    recs = raw_recordings()
    if not recs:
        pytest.skip(f"no raw Binance recordings under {data_dir()} (set DEPTHPILOT_DATA_DIR)")
    markets = set()
    for rec in recs:
        for depth in (250, 25):
            assert rebuild_recording(rec, depth) is not None, f"{rec}: the batch path was not taken"
            fast = load_recording(rec, depth=depth, cache=False)  # the builder, not the catalogue
            assert_same(fast, replay_books(rec, depth))
        markets.add(fast.exchange)
    assert {"binance", "binanceusdm"} <= markets  # spot and USD-M (COIN-M when a recording exists)


# --------------------------------------------------------------------------- generated recordings


def _num(rng: random.Random, x: float, decimals: int) -> str:
    r = rng.random()
    if r < 0.02:
        return repr(x) + "000000000001"  # more digits than a double: Python's float() decides
    if r < 0.04:
        return f"{x:.{decimals}e}"  # exponent form
    return f"{x:.{decimals}f}"


def generate(rng: random.Random, futures: bool, n: int, coinm: bool = False) -> list[str]:
    """Recording lines of one symbol with every sync hazard the replay handles."""
    sym = "btcusd_perp" if coinm else "btcusdt"
    tick, dec = (0.1, 1) if futures else (0.01, 8)
    bids: dict[int, float] = {}
    asks: dict[int, float] = {}
    mid = 600_000  # in ticks
    for k in range(1, 60):
        bids[mid - k] = round(rng.uniform(0.001, 3), 3)
        asks[mid + k] = round(rng.uniform(0.001, 3), 3)
    uid = 10_000
    ts = 1_721_260_800_000_000_000
    lines: list[str] = []
    history: list[str] = []

    def levels(side: dict[int, float]) -> list[list[str]]:
        return [[_num(rng, p * tick, dec), _num(rng, q, 8)] for p, q in side.items()]

    def snapshot(last_id: int) -> str:
        body: dict = {"lastUpdateId": last_id}
        if futures:
            body |= {"E": ts // 1_000_000, "T": ts // 1_000_000 - rng.choice([0, 3])}
        body |= {"bids": levels(bids), "asks": levels(asks)}
        return f"{ts} {json.dumps(body, separators=(',', ':'))}"

    prev_u = uid
    snap_due = rng.random() < 0.5
    undo: list[tuple[list, int]] = []
    b_lv_prev: list = []
    for i in range(n):
        ts += rng.randint(1, 50_000_000)
        first = uid + 1
        uid += rng.randint(1, 4)
        if snap_due:  # a snapshot whose lastUpdateId the coming diff straddles (sometimes an old one)
            lid = rng.randint(first, uid) if futures else rng.randint(first - 1, uid - 1)
            lines.append(snapshot(lid if rng.random() < 0.85 else rng.randint(5_000, first)))
            snap_due = False
        # mutate the true book near the top (and sometimes far away, sometimes crossing)
        b_lv: list[list[str]] = []
        a_lv: list[list[str]] = []
        for side, p in undo:  # the crossing level goes away again
            (bids if side is b_lv_prev else asks).pop(p, None)
            (b_lv if side is b_lv_prev else a_lv).append([_num(rng, p * tick, dec), "0"])
        undo = []
        for _ in range(rng.randint(0, 8)):
            side, book, sgn = (b_lv, bids, -1) if rng.random() < 0.5 else (a_lv, asks, 1)
            off = rng.randint(1, 70) if rng.random() < 0.9 else rng.randint(500, 5000)
            p = mid + sgn * off
            q = 0.0 if rng.random() < 0.35 else round(rng.uniform(0.001, 5), 3)
            if rng.random() < 0.01:
                p = mid - sgn * rng.randint(1, 3)  # crosses the book (for one diff)
                q = 1.0
                undo.append((side, p))
            if q > 0:
                book[p] = q
            else:
                book.pop(p, None)
            side.append([_num(rng, p * tick, dec), _num(rng, q, 8)])
        b_lv_prev = b_lv
        data = {"e": "depthUpdate", "E": ts // 1_000_000, "T": ts // 1_000_000, "s": sym.upper(), "U": first, "u": uid}
        if futures:
            data["pu"] = prev_u
            if coinm:
                data["ps"] = "BTCUSD"
        data |= {"b": b_lv, "a": a_lv}
        prev_u = uid
        chan = "depth@0ms" if futures else "depth@100ms"
        line = f"{ts} " + json.dumps({"stream": f"{sym}@{chan}", "data": data}, separators=(",", ":"))
        r = rng.random()
        if r < 0.03 and lines:
            pass  # lost diff: a gap
        elif r < 0.06 and lines:
            lines.insert(len(lines) - 1, line)  # out of order
        elif r < 0.08 and history:
            lines.append(line)
            lines.append(rng.choice(history[-5:]))  # duplicate / old diff
        else:
            lines.append(line)
        history.append(line)
        if rng.random() < 0.03:
            lines.append(f"{ts} " + '{"stream":"%s@trade","data":{"e":"trade","p":"1.0","q":"1.0","m":true}}' % sym)
        if i == 2 or rng.random() < 0.05:
            snap_due = True
    return lines


def write(tmp: Path, name: str, lines: list[str]) -> Path:
    p = tmp / name
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("seed", range(24))
def test_generated_recordings_with_gaps_equal_the_replay(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    futures = seed % 3 != 0
    coinm = seed % 6 == 5
    path = write(tmp_path, "rec.gz", generate(rng, futures, 400, coinm))
    for depth in (5, 40):
        batch = rebuild_recording(path, depth)
        assert batch is not None, "the batch path was not taken"
        slow = replay_books(path, depth)
        assert_same(load_recording(path, depth=depth, cache=False), slow)
        assert (~slow.valid).any() and slow.valid.any()  # the hazards did happen


def test_continuation_file_continues_the_book(tmp_path: Path) -> None:
    lines = generate(random.Random(7), True, 300)
    cut = len(lines) // 2
    write(tmp_path, "a.gz", lines[:cut])
    write(tmp_path, "b.gz", lines[cut:])
    assert rebuild_recording(tmp_path, 10) is not None
    assert_same(load_recording(tmp_path, depth=10, cache=False), replay_books(tmp_path, 10))


def test_what_the_batch_path_does_not_cover_goes_through_the_replay(tmp_path: Path) -> None:
    lines = generate(random.Random(3), True, 120)
    # a garbled line: the replay names it (the batch path declines)
    bad = write(tmp_path, "bad.gz", [*lines[:50], "1721260800000000000 {not json", *lines[50:]])
    assert rebuild_recording(bad, 10) is None
    with pytest.raises(ValueError, match=r"bad\.gz:51"):
        load_recording(bad, depth=10)
    # a level list that is not number pairs: declined, and the replay refuses it too
    odd = [ln.replace('"b":[', '"b":[["1.0","x"],', 1) if i == 60 else ln for i, ln in enumerate(lines)]
    (tmp_path / "x").mkdir()
    p = write(tmp_path / "x", "odd.gz", odd)
    assert rebuild_recording(p, 10) is None
    with pytest.raises(ValueError, match="odd.gz"):
        load_recording(p, depth=10)
    # two symbols: the replay splits the streams
    other = [ln.replace("btcusdt@", "ethusdt@").replace("BTCUSDT", "ETHUSDT") for ln in lines]
    d = tmp_path / "two"
    d.mkdir()
    write(d, "btc.gz", lines)
    write(d, "eth.gz", other)
    assert rebuild_recording(d, 10) is None
    assert_same(load_recording(d, depth=10, cache=False), replay_books(d, 10))


def test_parse_levels_matches_python_float() -> None:
    texts = [
        b'[["64123.10","0.004"],["0.00000000","1e-3"]]',
        b"[]",
        b"[[1,2],[3.5,-0.0]]",
        b'[["123456789012345678","0.1"]]',
    ]
    blob = b"".join(texts)
    lens = np.array([len(t) for t in texts])
    ends = np.cumsum(lens)
    px, qty = np.empty(16), np.empty(16)
    counts = np.zeros(len(texts), dtype=np.int64)
    slow = np.zeros(32, dtype=np.uint8)
    spans = np.empty((32, 2), dtype=np.int64)
    n, bad = parse_levels(np.frombuffer(blob, np.uint8), ends - lens, ends, px, qty, counts, slow, spans)
    assert bad == -1 and n == 5 and counts.tolist() == [2, 0, 2, 1]
    want = [(64123.10, 0.004), (0.0, 1e-3), (1.0, 2.0), (3.5, -0.0)]
    assert [(px[i], qty[i]) for i in range(4)] == want
    assert slow[8] == 1  # 18 significant digits: left to float()
    for garbage in (b'[["1.0","2.0","3.0"]]', b'[["1.0x","2"]]', b'[["1.0"]]', b'[["--1","2"]]'):
        e = np.array([len(garbage)])
        assert parse_levels(np.frombuffer(garbage, np.uint8), np.array([0]), e, px, qty, counts, slow, spans)[1] == 0


def test_price_slots_rank_distinct_prices_as_float_equality() -> None:
    from collector.book_kernel import price_slots

    rng = np.random.default_rng(2)
    px = np.round(rng.uniform(1, 100_000, 60_000), 2)  # many distinct prices: the table grows
    px = np.concatenate([px, px[:5000], [0.0, -0.0, 0.0]])
    slots, prices = price_slots(px, len(px))
    uniq = np.unique(px)  # -0.0 == 0.0: one value
    assert np.array_equal(prices, uniq)
    assert np.array_equal(prices[slots], px)
    assert slots[-1] == slots[-2] == slots[-3] == 0 and prices[0] == 0.0
