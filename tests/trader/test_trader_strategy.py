"""Table-driven tests of the seed strategy rules, through the engine and the paper exchange.

A scenario is a list of steps: ``"u"``/``"d"``/``"f"`` = an up / down / flat signal (a fresh book
at the current price comes first), ``"p 60100"`` = a book at that bid, ``"w 90"`` = 90 s pass
(with a book). The outcome is the orders the engine sent: ``L``/``S`` = long/short entry,
``x:<reason>`` = a closing order (or stop) with its exit reason.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from trader.actions import ClosedTrade
from trader.config import TraderConfig
from trader.domain import OrderRequest
from tests.trader.helpers import DOWN, FLAT, S, SYM, UP, Clock, harness

PROBS = {"u": UP, "d": DOWN, "f": FLAT}


def run(steps: list[str], cfg: TraderConfig | None = None, n_trades: int | None = None, start: bool = True):
    cfg = cfg or TraderConfig(confirm_k=1, stop_cooldown_s=60, trailing_enabled=False)
    sim = harness(cfg, n_trades=n_trades, start=start)
    c = Clock(sim)
    price = 60000.0
    c.book(price)
    out: list[str] = []
    for step in steps:
        kind, _, arg = step.partition(" ")
        if kind in PROBS:
            # a fresh book, the signal, then the next book (orders fill on books at/after the decision)
            acts = c.book(price, dt=0.5) + c.signal(PROBS[kind], dt=0.5) + c.book(price, dt=0.0)
        elif kind == "p":
            price = float(arg)
            acts = c.book(price)
        elif kind == "w":
            acts = c.book(price, dt=float(arg))
        elif kind in ("pause", "resume", "flatten"):
            acts = sim.control(kind, SYM)
        else:
            raise AssertionError(step)
        for a in acts:
            if isinstance(a, OrderRequest) and not a.reduce_only:
                out.append("L" if a.side == "buy" else "S")
            elif isinstance(a, ClosedTrade):
                out.append(f"x:{a.exit_reason}")
    return " ".join(out), sim


K2 = TraderConfig(confirm_k=2, trailing_enabled=False)
NEUTRAL_EXIT = TraderConfig(confirm_k=1, exit_on_neutral=True, trailing_enabled=False)
NO_BLOCK = TraderConfig(
    confirm_k=1,
    block_same_direction_reentry=False,
    stop_cooldown_s=60,
    trailing_enabled=False,
    leverage=D("10"),
    max_loss_fraction=D("0.2"),
)  # initial stop 2 % away
DECISION = TraderConfig(confirm_k=1, use_signal_decision=True, trailing_enabled=False)
SMOOTH = TraderConfig(confirm_k=1, smoothing_alpha=0.5, entry_threshold=0.6, trailing_enabled=False)

CASES = [
    # id, steps, config, expected orders
    ("long on up", ["u"], None, "L"),
    ("short on down", ["d"], None, "S"),
    ("k=2 needs two agreeing readings", ["u"], K2, ""),
    ("k=2 two ups enter", ["u", "u"], K2, "L"),
    ("k=2 disagreement resets", ["u", "f", "u"], K2, ""),
    ("k=2 after disagreement", ["u", "d", "u", "u"], K2, "L"),
    ("enter only when flat", ["u", "u", "u", "u"], None, "L"),
    ("exit on opposite, then enter it", ["u", "d", "d"], None, "L x:signal S"),
    ("neutral does not exit by default", ["u", "f", "f"], None, "L"),
    ("neutral exits when configured", ["u", "f"], NEUTRAL_EXIT, "L x:signal"),
    ("no same-direction re-open after a close", ["u", "flatten", "u", "u"], None, "L x:flatten"),
    ("neutral reading lifts the re-open block", ["u", "flatten", "u", "f", "u"], None, "L x:flatten L"),
    ("opposite reading lifts the block (and enters)", ["u", "flatten", "d"], None, "L x:flatten S"),
    ("smoothing: one strong up is not enough at alpha .5 from a flat start", ["f", "u"], SMOOTH, ""),
    ("smoothing: two strong ups cross the threshold", ["f", "u", "u"], SMOOTH, "L"),
    (
        "stop-loss then cooldown blocks the same direction",
        ["u", "p 58700", "p 60000", "u", "w 30", "u"],
        NO_BLOCK,
        "L x:stop",
    ),
    (
        "after the cooldown the direction is free again",
        ["u", "p 58700", "p 60000", "w 61", "u"],
        NO_BLOCK,
        "L x:stop L",
    ),
    ("the cooldown is per direction", ["u", "p 58700", "p 60000", "d"], NO_BLOCK, "L x:stop S"),
    ("paused: no entries", ["pause", "u", "u"], None, ""),
    ("predictor decision mode ignores the probabilities", ["u", "d"], DECISION, ""),
    ("resumed: entries again", ["pause", "u", "resume", "u"], None, "L"),
]


@pytest.mark.parametrize("steps,cfg,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_strategy_rules(steps, cfg, expected):
    got, _ = run(steps, cfg)
    assert got == expected


def test_not_started_means_no_entries():
    got, sim = run(["u", "d", "u"], start=False)
    assert got == ""
    assert sim.engine.counters["orders"] == 0


@pytest.mark.parametrize(
    "n,expected",
    [
        (1, "L x:signal"),
        (2, "L x:signal S x:signal"),
        (3, "L x:signal S x:signal L"),
    ],
)
def test_n_trades_session_stops_after_n_round_trips(n, expected):
    got, sim = run(["u", "d", "d", "u", "u", "d", "d"][:7], n_trades=n)
    # the session counts closed round trips; after the n-th, no entry
    assert got.startswith(expected)
    if n < 3:
        assert got == expected
        st = sim.engine.status().symbols[0]
        assert not st.trading and st.trades_left == 0


def test_expired_signal_is_ignored_and_counted():
    sim = harness()
    c = Clock(sim)
    c.book(60000.0)
    c.book(60000.0, dt=20)  # now = t0 + 21 s
    from tests.trader.helpers import signal

    old = signal(c.t - 15 * S, *UP, ttl_s=10)  # expired 5 s ago
    assert sim.signal(old) == []
    assert sim.engine.counters["ignored_expired"] == 1
    fresh = signal(c.t, *UP, ttl_s=10)
    assert any(isinstance(a, OrderRequest) for a in sim.signal(fresh))


@pytest.mark.parametrize("how", ["invalid", "stale"])
def test_signal_from_invalid_or_stale_book_is_ignored(how):
    sim = harness()
    c = Clock(sim)
    if how == "invalid":
        c.book(60000.0, valid=False)
        acts = c.signal(UP)
    else:
        c.book(60000.0)
        acts = c.signal(UP, dt=sim.engine.cfg.max_book_age_s + 1)
    assert acts == [] or not any(isinstance(a, OrderRequest) for a in acts)
    assert sim.engine.counters["ignored_bad_book"] == 1
    assert sim.engine.status().symbols[0].last_signal == ""  # never reached the strategy


def test_predictor_decision_mode_follows_signal_decision():
    import msgspec

    from tests.trader.helpers import signal

    sim = harness(TraderConfig(confirm_k=2, use_signal_decision=True, trailing_enabled=False))
    c = Clock(sim)
    c.book(60000.0)
    # probabilities say down, the predictor's smoothed decision says up: the decision wins
    for _ in range(2):
        c.t += S
        c.book(60000.0, dt=0)
        acts = sim.signal(msgspec.structs.replace(signal(c.t, *DOWN), decision="up"))
    assert [(a.side, a.reduce_only) for a in acts if isinstance(a, OrderRequest)] == [("buy", False)]


@pytest.mark.parametrize("flatten,expected_pos", [(False, D("0.004")), (True, None)])
def test_stop_trading_with_and_without_flatten(flatten, expected_pos):
    sim = harness()
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    c.book(60000.0, dt=0)
    acts = sim.control("stop", "all", flatten)
    assert [o.reason for o in acts if isinstance(o, OrderRequest)] == (["flatten"] if flatten else [])
    c.book(60000.0)
    pos = sim.engine.positions().positions
    assert (pos[0].qty if pos else None) == expected_pos
    st = sim.engine.status().symbols[0]
    assert not st.trading
    c.book(60000.0)
    assert not [a for a in c.signal(DOWN) if isinstance(a, OrderRequest) and not a.reduce_only]


def _reference_read(cfg: TraderConfig, classes: list[str], probs: list[float]) -> tuple[float, float]:
    """The class lookup as written before the index cache: every (class, prob) pair, last wins."""
    up = down = 0.0
    for c, p in zip(classes, probs, strict=False):
        if c == cfg.up_class:
            up = float(p)
        elif c == cfg.down_class:
            down = float(p)
    return up, down


@pytest.mark.parametrize(
    "classes, probs",
    [
        (["down", "flat", "up"], [0.1, 0.2, 0.7]),
        (["up", "flat", "down"], [0.6, 0.1, 0.3]),  # another order: the cache must follow the list
        (["flat", "up"], [0.5, 0.5]),  # no down class
        (["down", "flat", "up"], [0.9, 0.1]),  # fewer probabilities than classes
        (["up", "down", "up"], [0.2, 0.3, 0.5]),  # a repeated class: the last pair wins
        (["up", "down", "up"], [0.2, 0.3]),  # ... among the pairs that exist
    ],
)
def test_strategy_read_matches_the_pairwise_lookup(classes, probs):
    """Strategy.read caches where the up/down classes sit per classes list; the smoothed state
    and the readings equal the pairwise lookup for any list, in any order of calls."""
    from trader.strategy import Strategy

    cfg = TraderConfig(smoothing_alpha=0.5, entry_threshold=0.4, confirm_k=2)
    s = Strategy(cfg)
    shared = ["down", "flat", "up"]
    s.read(shared, [0.3, 0.3, 0.4])  # a cached list first, then the parametrised one
    p_up, p_down = s.p_up, s.p_down
    s.read(classes, probs)
    up, down = _reference_read(cfg, classes, probs)
    assert (s.p_up, s.p_down) == (0.5 * up + 0.5 * p_up, 0.5 * down + 0.5 * p_down)
    s.read(list(classes), probs)  # an equal list, another object
    assert s.p_up == 0.5 * up + 0.5 * (0.5 * up + 0.5 * p_up)


def test_strategy_read_follows_a_reconfigured_class_name():
    from trader.strategy import Strategy

    classes = ["down", "flat", "up", "rally"]
    s = Strategy(TraderConfig(smoothing_alpha=1.0))
    s.read(classes, [0.1, 0.1, 0.2, 0.6])
    assert s.p_up == 0.2
    s.reconfigure(TraderConfig(smoothing_alpha=1.0, up_class="rally"))
    s.read(classes, [0.1, 0.1, 0.2, 0.6])
    assert s.p_up == 0.6
