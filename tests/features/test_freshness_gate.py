"""InputGate: the one drop/count/log step the features and predictor services share for inputs
that are too old or from the future."""

from __future__ import annotations

from collections import Counter

import pytest

from features.freshness import FutureInput, InputClock, InputGate

S = 10**9


def _gate(now: list[int], mode: str = "wall") -> tuple[InputGate, Counter[str], list[str]]:
    lines: list[str] = []
    counts: Counter[str] = Counter()
    clock = InputClock(mode, future_tolerance_ns=5 * S, max_age_ns=10 * S, now_fn=lambda: now[0])  # type: ignore[arg-type]
    gate = InputGate(
        clock, counts, lambda fmt, *a: lines.append(fmt % a), "%s is %.1f s old (> %g s): dropped, %d so far"
    )
    return gate, counts, lines


def test_gate_counts_and_logs_old_inputs_first_and_every_thousandth():
    now = [1_700_000_000 * S]
    gate, counts, lines = _gate(now)
    assert gate.admit(now[0] - 2 * S, "x book", stream="x book", log_args=("x book",))
    assert counts["dropped_old"] == 0 and lines == []
    for _ in range(1000):
        assert not gate.admit(now[0] - 12 * S, "x book", stream="x book", log_args=("x book",))
    assert counts["dropped_old"] == 1000 and counts["future"] == 0
    assert lines == [
        "x book is 12.0 s old (> 10 s): dropped, 1 so far",
        "x book is 12.0 s old (> 10 s): dropped, 1000 so far",
    ]


def test_gate_counts_and_reraises_future_inputs_without_advancing_the_replay_clock():
    gate, counts, lines = _gate([0], mode="replay")
    t0 = 10**12
    assert gate.admit(t0, "x book", stream="x book")  # first input: accepted, starts the replay clock
    with pytest.raises(FutureInput, match="x book ts .* ahead of the replay clock"):
        gate.admit(t0 + 6 * S, "x book", stream="x book")
    assert counts == Counter(future=1) and lines == []
    # the rejected future ts did not move the clock: an input 9 s behind t0 is still fresh ...
    assert gate.admit(t0 - 9 * S, "x book", stream="x book")
    # ... and an accepted one does move it (per stream): 11 s behind t0 + 4 s is old
    assert gate.admit(t0 + 4 * S, "x book", stream="x book")
    assert not gate.admit(t0 - 7 * S, "x book", stream="x book", log_args=("x book",))
    assert gate.admit(t0 - 7 * S, "y trade", stream="y trade")  # another stream: its own age
    assert counts == Counter(future=1, dropped_old=1)
    assert lines == ["x book is 11.0 s old (> 10 s): dropped, 1 so far"]
