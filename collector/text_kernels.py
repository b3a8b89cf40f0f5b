"""Compiled (numba) text kernels for raw Binance recordings: pure byte-array logic, no I/O.
:mod:`collector.binance_batch` reads the files and calls these.

* :func:`scan_lines` classifies the ``<ts> <json>`` lines of a file (depth diff, REST snapshot,
  another stream, blank, or not a recording line) and parses the receive timestamps;
* :func:`parse_levels` turns the JSON text of the level lists (``[["64123.10","0.004"], ...]``,
  quoted or bare numbers) into float64 price/size arrays. A decimal with at most 15 significant
  digits and a power-of-ten exponent within 10^±22 is ``m / 10^k`` (or ``m * 10^k``) with both
  operands exact, so one IEEE operation gives the correctly rounded double: the value Python's
  ``float()`` and msgspec give. Anything else (more digits, a far exponent) is flagged for
  ``float()`` in Python; anything that is not a number list is an error (the caller falls back
  to the collector's replay, which names the bad line).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_POW10 = np.array([10.0**k for k in range(23)])  # exact doubles 1e0 .. 1e22


@njit(cache=True, nogil=True)
def parse_levels(buf, starts, ends, out_px, out_qty, counts, slow, spans):  # pragma: no cover - compiled
    """Parse piece ``i`` = ``buf[starts[i]:ends[i]]`` (a JSON list of [price, size] pairs).

    Writes the pairs to ``out_px``/``out_qty`` (pieces in order) and ``counts[i]`` levels per
    piece; a number that needs Python's ``float()`` gets ``slow[2 * level + (0 price, 1 size)] = 1``
    and its text span in ``spans`` at the same slot. Returns (levels, -1), or (-1, piece) for a
    piece that is not a list of number pairs.
    """
    pw = _POW10
    n = 0  # levels written
    for i in range(starts.shape[0]):
        k = starts[i]
        end = ends[i]
        tokens = 0
        opens = 0
        while k < end:
            c = buf[k]
            if c == 91:
                opens += 1
                k += 1
                continue
            if c == 93 or c == 44 or c == 34 or c == 32 or c == 10 or c == 13 or c == 9:
                k += 1
                continue
            if not ((48 <= c <= 57) or c == 45 or c == 43 or c == 46):
                return -1, i
            t0 = k
            neg = False
            if c == 45 or c == 43:
                neg = c == 45
                k += 1
            m = 0
            digits = 0
            frac = 0
            seen_dot = False
            any_digit = False
            exp = 0
            bad = False
            while k < end:
                c = buf[k]
                if 48 <= c <= 57:
                    any_digit = True
                    if seen_dot:
                        frac += 1
                    if m != 0 or c != 48:
                        if digits < 15:
                            m = m * 10 + (c - 48)
                            digits += 1
                        else:
                            bad = True  # more significant digits than exact: float() decides
                    k += 1
                elif c == 46 and not seen_dot:
                    seen_dot = True
                    k += 1
                elif c == 101 or c == 69:  # exponent
                    k += 1
                    eneg = False
                    if k < end and (buf[k] == 45 or buf[k] == 43):
                        eneg = buf[k] == 45
                        k += 1
                    ed = 0
                    while k < end and 48 <= buf[k] <= 57:
                        if exp < 10000:
                            exp = exp * 10 + (buf[k] - 48)
                        ed += 1
                        k += 1
                    if ed == 0:
                        return -1, i
                    if eneg:
                        exp = -exp
                    break
                else:
                    break
            if not any_digit:
                return -1, i
            if k < end:  # a number ends at a separator
                c = buf[k]
                if not (c == 93 or c == 44 or c == 34 or c == 32 or c == 10 or c == 13 or c == 9):
                    return -1, i
            e10 = exp - frac
            v = 0.0
            if bad:
                pass
            elif m == 0:
                v = 0.0
            elif -22 <= e10 <= 22:
                v = m / pw[-e10] if e10 < 0 else m * pw[e10]
            else:
                bad = True
            if neg:
                v = -v
            j = n + (tokens >> 1)
            if j >= out_px.shape[0]:
                return -1, i
            if tokens & 1:
                out_qty[j] = v
            else:
                out_px[j] = v
            if bad:
                slot = 2 * j + (tokens & 1)
                slow[slot] = 1
                spans[slot, 0] = t0
                spans[slot, 1] = k
            tokens += 1
        if tokens & 1 or (tokens >> 1) != max(opens - 1, 0):
            return -1, i
        counts[i] = tokens >> 1
        n += tokens >> 1
    return n, -1


# ----------------------------------------------------------------------------- line scan
LINE_DIFF, LINE_SNAPSHOT, LINE_OTHER, LINE_BLANK, LINE_BAD = 0, 1, 2, 3, -1
_STREAM_OPEN = np.frombuffer(b'{"stream":"', dtype=np.uint8)
_SNAP_OPEN = np.frombuffer(b'{"lastUpdateId"', dtype=np.uint8)
_DEPTH = np.frombuffer(b"depth", dtype=np.uint8)


@njit(cache=True, nogil=True, inline="always")
def _at(buf, k, end, lit):  # pragma: no cover - compiled
    if k + lit.shape[0] > end:
        return False
    for i in range(lit.shape[0]):
        if buf[k + i] != lit[i]:
            return False
    return True


@njit(cache=True, nogil=True)
def scan_lines(buf, newlines):  # pragma: no cover - compiled
    """Classify the lines of a recording file (``<ts> <json>`` per line).

    Returns per line: kind (LINE_DIFF: a combined-stream ``<sym>@depth[@...]`` message,
    LINE_SNAPSHOT: a REST snapshot, LINE_OTHER: another stream, LINE_BLANK, LINE_BAD: not
    ``<digits> {...}``), the local timestamp as written, the JSON's start and end, and the
    stream name's span (diffs). ``newlines``: the positions of the b"\\n" bytes, ascending.
    Only LINE_DIFF/LINE_SNAPSHOT are decoded by the caller."""
    n = buf.shape[0]
    cap = newlines.shape[0] + 1
    kind = np.empty(cap, dtype=np.int8)
    ts = np.zeros(cap, dtype=np.int64)
    j0 = np.zeros(cap, dtype=np.int64)
    j1 = np.zeros(cap, dtype=np.int64)
    s0 = np.zeros(cap, dtype=np.int64)
    s1 = np.zeros(cap, dtype=np.int64)
    nl = 0
    k = 0
    so = _STREAM_OPEN
    sn = _SNAP_OPEN
    dp = _DEPTH
    for li in range(cap):
        if k >= n:
            break
        e = newlines[li] if li < newlines.shape[0] else n
        # [k, e) is one line
        a = k
        b = e
        while b > a and (buf[b - 1] == 13 or buf[b - 1] == 32 or buf[b - 1] == 9):
            b -= 1
        while a < b and (buf[a] == 32 or buf[a] == 9 or buf[a] == 13):
            a += 1
        i = nl
        nl += 1
        kind[i] = LINE_BAD
        if a == b:
            kind[i] = LINE_BLANK
            k = e + 1
            continue
        t = 0
        d = 0
        p = k
        while p < b and 48 <= buf[p] <= 57:
            if d < 19:
                t = t * 10 + (buf[p] - 48)
            d += 1
            p += 1
        if d == 0 or d > 19 or t < 0 or p >= b or buf[p] != 32 or buf[p + 1] != 123 or buf[b - 1] != 125:
            k = e + 1
            continue
        p += 1
        ts[i] = t
        j0[i] = p
        j1[i] = b
        if _at(buf, p, b, so):
            q = p + so.shape[0]
            r = q
            while r < b and buf[r] != 34 and buf[r] != 64:
                r += 1
            if (
                r < b
                and buf[r] == 64
                and _at(buf, r + 1, b, dp)
                and r + 6 < b
                and (buf[r + 6] == 34 or buf[r + 6] == 64)
            ):
                kind[i] = LINE_DIFF
                s0[i] = q
                s1[i] = r
            else:
                kind[i] = LINE_OTHER
        elif _at(buf, p, b, sn):
            kind[i] = LINE_SNAPSHOT
        k = e + 1
    return kind[:nl], ts[:nl], j0[:nl], j1[:nl], s0[:nl], s1[:nl]
