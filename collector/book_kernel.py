"""Compiled (numba) kernels for the batch book rebuild of a raw Binance recording: pure array
logic, no I/O. :mod:`collector.binance_batch` reads the files and calls these.

* :func:`price_slots` ranks the recording's distinct prices (float equality, as a dict keyed by
  price), so a side can be a dense array of sizes over those slots;
* :func:`rebuild` replays the sync rule of :class:`collector.exchanges.binance_sync.BinanceDiffBook`
  (snapshot + first-diff straddle, ``U``/``u``/``pu`` continuity, gap -> invalid until a newer
  snapshot, buffered diffs bridging to it, stale snapshots ignored, crossed book invalid) and the
  emit rule of :class:`collector.replay_binance.BinanceRecordingReplay` (a row per applied diff
  while valid, a row on each validity change), writing the top ``depth`` levels of each emitted
  row straight into (rows, depth, 2) arrays. A level update is one array write plus, for a new
  level, a short scan to its better neighbour; a row is read by walking the side's linked
  levels from the best one.
  ``tests/collector/test_book_batch.py`` proves the rows equal the replay's bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

APPLIED, STALE, BUFFERED, GAP = 0, 1, 2, 3
KIND_DIFF, KIND_SNAPSHOT = 0, 1
MAX_BUFFER = 10_000  # BinanceDiffBook's default max_buffer (deque maxlen)


# ----------------------------------------------------------------------------- price slots


@njit(cache=True, nogil=True)
def price_slots(px, n):  # pragma: no cover - compiled
    """Slot of each of the ``n`` prices in the sorted distinct prices (a hash of the doubles'
    bits, ``-0.0`` as ``0.0``: the equality a dict keyed by float uses). Returns (slot of each
    price, the distinct prices ascending). The table grows with the distinct prices (kept at
    most half full), so it stays small enough for the cache."""
    lg = 12
    size = 1 << lg
    mask = size - 1
    tkey = np.empty(size, dtype=np.int64)
    tid = np.full(size, -1, dtype=np.int32)
    ids = np.empty(n, dtype=np.int64)
    vals = np.empty(max(n, 1), dtype=np.float64)
    bits = px[:n].view(np.int64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    shift = np.uint64(64 - lg)
    nd = 0
    for j in range(n):
        b = bits[j]
        if px[j] == 0.0:
            b = 0
        h = np.int64((np.uint64(b) * mult) >> shift)
        while True:
            t = tid[h]
            if t < 0:
                tid[h] = nd
                tkey[h] = b
                vals[nd] = 0.0 if b == 0 else px[j]
                ids[j] = nd
                nd += 1
                if 2 * nd > size:  # grow: re-insert every distinct price
                    lg += 1
                    size = 1 << lg
                    mask = size - 1
                    shift = np.uint64(64 - lg)
                    tkey = np.empty(size, dtype=np.int64)
                    tid = np.full(size, -1, dtype=np.int32)
                    for q in range(nd):
                        bq = vals[q : q + 1].view(np.int64)[0]  # (0.0 stored as +0.0: bits 0)
                        hq = np.int64((np.uint64(bq) * mult) >> shift)
                        while tid[hq] >= 0:
                            hq = (hq + 1) & mask
                        tid[hq] = q
                        tkey[hq] = bq
                break
            if tkey[h] == b:
                ids[j] = t
                break
            h = (h + 1) & mask
    order = np.argsort(vals[:nd])
    rank = np.empty(nd, dtype=np.int64)
    for r in range(nd):
        rank[order[r]] = r
    for j in range(n):
        ids[j] = rank[ids[j]]
    return ids, vals[:nd][order]


# ----------------------------------------------------------------------------- rebuild
# A side is a dense array of sizes over the price slots (0 = no level; slots are the recording's
# distinct prices, ascending), a doubly linked list of its present slots from the best level
# outwards (``nx``: the next worse level, ``pv``: the next better one, -1 at the ends), its level
# count and its best slot. A row is read by walking the list from the best level.


@njit(cache=True, nogil=True, inline="always")
def _bid_set(Q, nx, pv, n, best, slot, q):  # pragma: no cover - compiled
    """Set (q > 0) or remove (q <= 0) one bid; returns (count, best slot or -1)."""
    if q > 0.0:
        if Q[slot] == 0.0:  # a new level: link it under its better neighbour
            n += 1
            if best < 0:
                nx[slot] = -1
                pv[slot] = -1
                best = slot
            elif slot > best:
                nx[slot] = best
                pv[slot] = -1
                pv[best] = slot
                best = slot
            else:
                k = slot + 1
                while Q[k] == 0.0:  # ends at ``best`` at the latest
                    k += 1
                w = nx[k]
                nx[k] = slot
                pv[slot] = k
                nx[slot] = w
                if w >= 0:
                    pv[w] = slot
        Q[slot] = q
    elif Q[slot] != 0.0:
        Q[slot] = 0.0
        n -= 1
        b = pv[slot]
        w = nx[slot]
        if b >= 0:
            nx[b] = w
        else:
            best = w
        if w >= 0:
            pv[w] = b
    return n, best


@njit(cache=True, nogil=True, inline="always")
def _ask_set(Q, nx, pv, n, best, slot, q):  # pragma: no cover - compiled
    """As :func:`_bid_set` for asks (better = lower slot; best = ``len(Q)`` when empty)."""
    empty = Q.shape[0]
    if q > 0.0:
        if Q[slot] == 0.0:
            n += 1
            if best == empty:
                nx[slot] = -1
                pv[slot] = -1
                best = slot
            elif slot < best:
                nx[slot] = best
                pv[slot] = -1
                pv[best] = slot
                best = slot
            else:
                k = slot - 1
                while Q[k] == 0.0:
                    k -= 1
                w = nx[k]
                nx[k] = slot
                pv[slot] = k
                nx[slot] = w
                if w >= 0:
                    pv[w] = slot
        Q[slot] = q
    elif Q[slot] != 0.0:
        Q[slot] = 0.0
        n -= 1
        b = pv[slot]
        w = nx[slot]
        if b >= 0:
            nx[b] = w
        else:
            best = w if w >= 0 else empty
        if w >= 0:
            pv[w] = b
    return n, best


@njit(cache=True, nogil=True)
def rebuild(
    kind, U, u, pu, has_pu, ts_ex, ts_recv, b_off, b_cnt, a_off, a_cnt, qty, key, P, depth, futures, out_b, out_a
):  # pragma: no cover - compiled
    """Replay the events (diffs and snapshots, in order) through the sync and emit rules.

    Event ``e``: ``kind`` (KIND_DIFF / KIND_SNAPSHOT), ``U``/``u``/``pu`` (snapshot: ``u`` =
    lastUpdateId), ``has_pu`` (the diff carries ``pu``), ``ts_ex`` (the book's exchange time
    after it, ns: diff ``E``, snapshot ``T or E``), ``ts_recv``, its bid levels
    ``qty/key[b_off:b_off+b_cnt]`` and ask levels likewise (``key``: the price's slot in the
    ascending distinct prices ``P``, :func:`price_slots`). ``futures``: -1 = from the first diff, 0 spot rule, 1 futures rule.

    Fills ``out_b``/``out_a`` rows (NaN beyond the book and on invalid rows) and returns
    (rows, row ts (ns: book exchange time, else receive time), row valid, widest row (levels,
    capped at ``depth``)).
    """
    nev = kind.shape[0]
    slots = P.shape[0]
    BQ = np.zeros(slots)
    AQ = np.zeros(slots)
    bnx = np.empty(slots, dtype=np.int64)
    bpv = np.empty(slots, dtype=np.int64)
    anx = np.empty(slots, dtype=np.int64)
    apv = np.empty(slots, dtype=np.int64)
    nb = 0
    na = 0
    bb = -1
    ba = slots
    state = 0  # 0 await snapshot, 1 await first diff, 2 synced
    last_u = 0
    snap_id = 0
    ever = False
    crossed = False
    fut = futures
    book_ts = 0
    bcap = max(nev, MAX_BUFFER) + MAX_BUFFER + 1
    buf = np.empty(bcap, dtype=np.int64)
    b0 = 0
    b1 = 0
    pending = np.empty(MAX_BUFFER, dtype=np.int64)
    row_ts = np.empty(out_b.shape[0], dtype=np.int64)
    row_ok = np.zeros(out_b.shape[0], dtype=np.bool_)
    rows = 0
    width = 0
    last_valid = -1
    nan = np.nan
    for e in range(nev):
        # ---- one event through BinanceDiffBook (on_diff / on_snapshot)
        if kind[e] == KIND_DIFF:
            todo = 1
        else:
            L = u[e]
            if (ever and L <= last_u) or (state == 1 and L <= snap_id):
                continue  # STALE snapshot: never rewinds the book
            if nb:
                BQ[:] = 0.0
            if na:
                AQ[:] = 0.0
            nb = 0
            na = 0
            bb = -1
            ba = slots
            o = b_off[e]
            for j in range(o, o + b_cnt[e]):
                if qty[j] > 0.0:  # a snapshot ignores size-0 levels
                    nb, bb = _bid_set(BQ, bnx, bpv, nb, bb, key[j], qty[j])
            o = a_off[e]
            for j in range(o, o + a_cnt[e]):
                if qty[j] > 0.0:
                    na, ba = _ask_set(AQ, anx, apv, na, ba, key[j], qty[j])
            book_ts = ts_ex[e]
            snap_id = L
            last_u = L
            state = 1
            crossed = nb > 0 and na > 0 and P[bb] >= P[ba]
            todo = b1 - b0
            pending[:todo] = buf[b0:b1]
            b0 = b1
        res = APPLIED
        for t in range(todo):
            d = e if kind[e] == KIND_DIFF else pending[t]
            ud = u[d]
            if state == 2:
                if (has_pu[d] and pu[d] == last_u) if fut == 1 else (U[d] == last_u + 1):
                    res = APPLIED
                elif ud <= last_u:
                    res = STALE
                else:
                    res = GAP
            else:
                if fut == -1:
                    fut = 1 if has_pu[d] else 0
                if state == 1:
                    if (ud < snap_id) if fut == 1 else (ud <= snap_id):
                        res = STALE
                    elif U[d] <= (snap_id if fut == 1 else snap_id + 1):
                        res = APPLIED
                    else:
                        res = GAP
                else:
                    res = BUFFERED  # kept (at most MAX_BUFFER, oldest dropped) to bridge to a snapshot
                    if b1 == bcap:
                        m = b1 - b0
                        buf[:m] = buf[b0:b1].copy()
                        b0 = 0
                        b1 = m
                    buf[b1] = d
                    b1 += 1
                    if b1 - b0 > MAX_BUFFER:
                        b0 += 1
            if res == APPLIED:
                o = b_off[d]
                for j in range(o, o + b_cnt[d]):
                    nb, bb = _bid_set(BQ, bnx, bpv, nb, bb, key[j], qty[j])
                o = a_off[d]
                for j in range(o, o + a_cnt[d]):
                    na, ba = _ask_set(AQ, anx, apv, na, ba, key[j], qty[j])
                book_ts = ts_ex[d]
                last_u = ud
                state = 2
                ever = True
                crossed = nb > 0 and na > 0 and P[bb] >= P[ba]
            elif res == GAP:  # invalid until a newer snapshot; the diff may bridge to it
                state = 0
                if b1 == bcap:
                    b1 = 0
                b0 = b1
                buf[b1] = d
                b1 += 1
        if kind[e] == KIND_SNAPSHOT:
            res = APPLIED if state == 2 else (BUFFERED if state == 1 else GAP)
        elif res == STALE or res == BUFFERED:
            continue  # book unchanged
        # ---- the replay's emit rule: every change while valid, and each validity change
        valid = 1 if (state == 2 and not crossed) else 0
        if valid == last_valid and valid == 0:
            continue
        last_valid = valid
        r = rows
        rows += 1
        row_ts[r] = book_ts if book_ts != 0 else ts_recv[e]
        kb = min(nb, depth)
        ka = min(na, depth)
        width = max(width, kb, ka)
        ob = out_b[r]
        oa = out_a[r]
        if valid:
            row_ok[r] = True
            k = bb
            for j in range(kb):
                ob[j, 0] = P[k]
                ob[j, 1] = BQ[k]
                k = bnx[k]
            k = ba
            for j in range(ka):
                oa[j, 0] = P[k]
                oa[j, 1] = AQ[k]
                k = anx[k]
        else:
            kb = 0
            ka = 0
        for j in range(kb, depth):
            ob[j, 0] = nan
            ob[j, 1] = nan
        for j in range(ka, depth):
            oa[j, 0] = nan
            oa[j, 1] = nan
    return rows, row_ts[:rows], row_ok[:rows], width
