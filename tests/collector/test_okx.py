"""OKX v5 books builder: CRC32 checksum verified on every book message of the real clip."""

from __future__ import annotations

import copy

import pytest

from collector.exchanges.core import ApplyResult
from collector.exchanges.cryptofeed_clips import CLIPS_DATASET, iter_clip
from collector.exchanges.okx import OkxBookBuilder, okx_checksum
from tests.collector.fakes.data import require

CLIP = f"{CLIPS_DATASET}/raw/OKX.ws.1.0.gz"
INSTRUMENTS = ["BTC-USDT", "BTC-USD-220527", "UNI-USD-SWAP"]


def _msgs() -> list[dict]:
    return [m.msg for m in iter_clip(require(CLIP))]


def _book_msgs(msgs: list[dict], inst: str) -> list[dict]:
    return [
        m for m in msgs if m.get("arg", {}).get("channel") == "books" and m["arg"]["instId"] == inst and "data" in m
    ]


def test_checksum_matches_documented_examples():
    # examples from OKX's (v3) API documentation, also used in public verifiers:
    # 2 bids / 2 asks -> -1881014294 ; 1 bid / 3 asks -> 831078360 (shorter side runs out first)
    assert okx_checksum([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]) == -1881014294
    assert okx_checksum([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]) == 831078360


@pytest.mark.parametrize("inst", INSTRUMENTS)
def test_checksum_verifies_on_all_book_messages_of_clip(inst):
    msgs = _msgs()
    n_book = len(_book_msgs(msgs, inst))
    assert n_book > 50  # snapshot + ~100 updates per instrument in this clip
    b = OkxBookBuilder(inst)
    results = [b.process(m) for m in msgs]
    assert results.count(ApplyResult.SNAPSHOT) == 1
    assert b.stats.checksum_ok == n_book  # every single book message verified
    assert b.stats.checksum_failed == 0 and b.stats.gaps == 0 and b.stats.crossed == 0
    assert b.valid and not b.needs_resync and b.reason == ""
    bb, ba = b.book.best_bid(), b.book.best_ask()
    assert bb[0] < ba[0]


def test_btc_usdt_book_state_and_snapshot_message():
    b = OkxBookBuilder("BTC-USDT")
    for m in _msgs():
        b.process(m)
    # clip recorded 2022-05-13: BTC ~30.2k; the books channel keeps 400 levels per side
    assert 29_000 < b.book.best_bid()[0] < 31_500
    assert len(b.book.bids) == 400 and len(b.book.asks) == 400
    snap = b.to_snapshot(25)
    assert snap.valid and snap.bids.shape == (25, 2) and snap.asks.shape == (25, 2)
    assert snap.ts_exchange > 1_652_459_000 * 10**9


def _corrupt_top_bid_size(msg: dict) -> dict:
    bad = copy.deepcopy(msg)
    bids = bad["data"][0]["bids"]
    i = max((k for k, lv in enumerate(bids) if float(lv[1]) > 0), key=lambda k: float(bids[k][0]))
    p, s, *rest = bids[i]
    bids[i] = [p, repr(float(s) + 0.5), *rest]
    return bad


def test_flipped_size_fails_checksum_and_requests_resync():
    msgs = _book_msgs(_msgs(), "BTC-USDT")
    b = OkxBookBuilder("BTC-USDT")
    for m in msgs[:10]:
        assert b.process(m) in (ApplyResult.SNAPSHOT, ApplyResult.APPLIED)
    control = OkxBookBuilder("BTC-USDT")  # control: the unmodified message verifies
    for m in msgs[:11]:
        control.process(m)
    assert control.stats.checksum_ok == 11 and control.valid
    r = b.process(_corrupt_top_bid_size(msgs[10]))
    assert r is ApplyResult.CHECKSUM_FAILED and r.needs_resync
    assert b.needs_resync and not b.valid and b.reason.startswith("checksum")
    assert b.stats.checksum_failed == 1 and b.stats.resyncs_requested == 1
    # until a new snapshot arrives, updates are dropped
    assert b.process(msgs[11]) is ApplyResult.AWAITING_SNAPSHOT
    assert b.process(msgs[0]) is ApplyResult.SNAPSHOT and b.valid and not b.needs_resync


def test_flipped_size_in_snapshot_fails():
    msgs = _book_msgs(_msgs(), "BTC-USDT")
    b = OkxBookBuilder("BTC-USDT")
    assert b.process(_corrupt_top_bid_size(msgs[0])) is ApplyResult.CHECKSUM_FAILED
    # same book with a numerically equal but differently written size fails too: strings matter
    alt = copy.deepcopy(msgs[0])
    p, s, *rest = alt["data"][0]["asks"][0]
    alt["data"][0]["asks"][0] = [p, s + "0" if "." in s else s + ".0", *rest]
    assert OkxBookBuilder("BTC-USDT").process(alt) is ApplyResult.CHECKSUM_FAILED


def test_seqid_gap_detected():
    # the 2022 clip predates seqId/prevSeqId; add them (shape of the current API) to real messages
    msgs = _book_msgs(_msgs(), "BTC-USDT")[:6]
    seq = 1000
    shaped = []
    for k, m in enumerate(msgs):
        m = copy.deepcopy(m)
        m["data"][0]["prevSeqId"] = -1 if k == 0 else seq
        seq += 7
        m["data"][0]["seqId"] = seq
        shaped.append(m)
    b = OkxBookBuilder("BTC-USDT")
    for m in shaped[:3]:
        assert b.process(m) in (ApplyResult.SNAPSHOT, ApplyResult.APPLIED)
    assert b.book.seq == shaped[2]["data"][0]["seqId"]
    r = b.process(shaped[4])  # shaped[3] lost
    assert r is ApplyResult.GAP and b.needs_resync and b.stats.gaps == 1


def test_other_messages_ignored_and_garbage_raises():
    from collector.exchanges.core import BookMessageError

    b = OkxBookBuilder("BTC-USDT")
    assert b.process({"event": "subscribe", "arg": {"channel": "books", "instId": "BTC-USDT"}}) is ApplyResult.IGNORED
    with pytest.raises(BookMessageError):
        b.process(
            {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot", "data": [{"bids": [["x"]]}]}
        )
    with pytest.raises(BookMessageError):
        b.process(["not", "a", "dict"])  # type: ignore[arg-type]
