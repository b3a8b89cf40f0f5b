"""The seed strategy: an event-driven state machine per symbol, pure (no I/O, no clock of its own).

Each accepted signal becomes a *reading* ("up", "down" or "flat"): the EMA-smoothed
probability of the up (down) class over ``entry_threshold`` and above the other one.
A reading is *confirmed* when the last ``confirm_k`` readings agree. Then:

* flat -> long on a confirmed "up", short on a confirmed "down";
* after a close, no re-entry in the same direction until a reading in another direction
  ("flat" or opposite) arrives (``block_same_direction_reentry``);
* after a stop-loss, no entry in that direction for ``stop_cooldown_s`` (signal time);
* in a position -> exit on a confirmed opposite reading (and, with ``exit_on_neutral``, on a
  confirmed "flat").

Which signals reach the strategy (expired, bad book), sessions and halts are the engine's job.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from trader.config import TraderConfig

Reading = Literal["up", "down", "flat"]
DIR_OF: dict[str, int] = {"up": 1, "down": -1, "flat": 0}


def _last_index(classes: list[str], name: str) -> int:
    """Index of the last ``name`` in ``classes`` (-1 when absent): the probability read for it."""
    for i in range(len(classes) - 1, -1, -1):
        if classes[i] == name:
            return i
    return -1


@dataclass(frozen=True)
class Decision:
    kind: Literal["enter", "exit"]
    side: int  # +1 long / -1 short: the position side entered or exited
    reason: str  # "signal"


class Strategy:
    def __init__(self, cfg: TraderConfig) -> None:
        self.cfg = cfg
        self.p_up: float | None = None
        self.p_down: float | None = None
        self.readings: deque[Reading] = deque(maxlen=cfg.confirm_k)
        self.blocked_dir = 0  # direction closed last; cleared by a reading in another direction
        self.cooldown_until = {1: 0, -1: 0}  # ns, per direction, after a stop
        self._cls: list[str] | None = None  # the classes list the indexes below were read from
        self._iu = self._id = -1

    def reconfigure(self, cfg: TraderConfig) -> None:
        self.cfg = cfg
        self._cls = None  # the up/down class names may have changed
        if self.readings.maxlen != cfg.confirm_k:
            self.readings = deque(self.readings, maxlen=cfg.confirm_k)

    def read(self, classes: list[str], probs: list[float], decision: str = "") -> Reading:
        """Fold one signal's probabilities into the smoothed state; return its reading (with
        ``use_signal_decision``, the predictor's own decision: "up"/"down", anything else flat)."""
        cfg = self.cfg
        if cfg.use_signal_decision:
            return self._push("up" if decision == "up" else "down" if decision == "down" else "flat")
        if classes is not self._cls:  # where the up/down classes sit (cached per classes list)
            self._cls = classes
            self._iu = _last_index(classes, cfg.up_class)
            self._id = _last_index(classes, cfg.down_class) if cfg.down_class != cfg.up_class else -1
        if len(probs) >= len(classes):
            up = float(probs[self._iu]) if self._iu >= 0 else 0.0
            down = float(probs[self._id]) if self._id >= 0 else 0.0
        else:  # fewer probabilities than classes: the pairs that exist
            up = down = 0.0
            for c, p in zip(classes, probs, strict=False):
                if c == cfg.up_class:
                    up = float(p)
                elif c == cfg.down_class:
                    down = float(p)
        a = cfg.smoothing_alpha
        self.p_up = up if self.p_up is None else a * up + (1.0 - a) * self.p_up
        self.p_down = down if self.p_down is None else a * down + (1.0 - a) * self.p_down
        th = cfg.entry_threshold
        if self.p_up >= th and self.p_up > self.p_down:
            r: Reading = "up"
        elif self.p_down >= th and self.p_down > self.p_up:
            r = "down"
        else:
            r = "flat"
        return self._push(r)

    def _push(self, r: Reading) -> Reading:
        self.readings.append(r)
        if self.blocked_dir and DIR_OF[r] != self.blocked_dir:
            self.blocked_dir = 0
        return r

    def confirmed(self) -> Reading | None:
        rs = self.readings
        if len(rs) < self.cfg.confirm_k:
            return None
        first = rs[0]
        return first if rs.count(first) == len(rs) else None

    def blocked(self, side: int, now_ns: int) -> str:
        """Why an entry in ``side`` is not allowed now ('' when it is)."""
        if side > 0 and not self.cfg.allow_long:
            return "long entries disabled"
        if side < 0 and not self.cfg.allow_short:
            return "short entries disabled"
        if self.cfg.block_same_direction_reentry and self.blocked_dir == side:
            return "same direction as the last close; waiting for an opposite or neutral reading"
        if now_ns < self.cooldown_until[side]:
            return f"stop-loss cooldown for {(self.cooldown_until[side] - now_ns) / 1e9:.0f} s"
        return ""

    def decide(self, position_side: int, now_ns: int) -> Decision | None:
        conf = self.confirmed()
        if conf is None:
            return None
        d = DIR_OF[conf]
        if position_side == 0:
            if d and not self.blocked(d, now_ns):
                return Decision("enter", d, "signal")
            return None
        if d == -position_side and self.cfg.exit_on_opposite:
            return Decision("exit", position_side, "signal")
        if d == 0 and self.cfg.exit_on_neutral:
            return Decision("exit", position_side, "signal")
        return None

    def on_closed(self, side: int, reason: str, now_ns: int) -> None:
        """A position in ``side`` closed for ``reason`` at ``now_ns``."""
        self.blocked_dir = side
        if reason == "stop":  # a loss stop; a trailing stop that locked profit has no cooldown
            self.cooldown_until[side] = now_ns + int(self.cfg.stop_cooldown_s * 1e9)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "p_up": self.p_up,
            "p_down": self.p_down,
            "readings": list(self.readings),
            "blocked_dir": self.blocked_dir,
            "cooldown_until": {str(k): v for k, v in self.cooldown_until.items()},
        }

    def load(self, d: dict) -> None:
        self.p_up, self.p_down = d.get("p_up"), d.get("p_down")
        self.readings = deque(d.get("readings", []), maxlen=self.cfg.confirm_k)
        self.blocked_dir = int(d.get("blocked_dir", 0))
        cd = d.get("cooldown_until", {})
        self.cooldown_until = {1: int(cd.get("1", 0)), -1: int(cd.get("-1", 0))}
