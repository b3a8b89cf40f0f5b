"""Execution through a ccxt sync client (Binance USD-M futures, ``binanceusdm``, by default).

Symbols are the venue's market ids (``BTCUSDT``), as everywhere in the trader; the unified
ccxt symbol (``BTC/USDT:USDT``) is resolved from the loaded markets.

ccxt specifics (ccxt 4.5): ccxt never retries by itself (its rate limiter only spaces
requests out), so the backoff here is the only one; ``options.fetchCurrencies`` is off
(``load_markets`` would otherwise call the spot wallet API); conditional orders on USD-M go to
the algo-order API (``/fapi/v1/algoOrder``, ``clientAlgoId``); a local server or mirror is set
by rebasing every ``urls['api']`` entry (paths kept).

Idempotency: ``newClientOrderId`` is derived from the intent's ``client_order_id``. Binance
only refuses a duplicate id among OPEN orders (-4116) - a filled market order's id can be
reused - so ``submit`` looks the id up (``fetch_order`` with the unified ``clientOrderId``
param; Binance sends it as ``origClientOrderId``) before it creates, and after a create that
timed out, before anything is re-sent. Other ccxt venues work as far as they support these
unified calls; only ``binanceusdm`` is tested.

Not thread-safe: one worker thread per client.

Stop-loss: one reduce-only ``STOP_MARKET`` with ``closePosition`` per position, replaced by
cancel + create when it moves (Binance allows one closePosition stop per direction).
Events: REST polling (``fetch_my_trades`` since the last fill, tracked orders, positions).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt

from trader.domain import (
    ExecEvent,
    ExecutionError,
    Instrument,
    Mode,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderReport,
    OrderRequest,
    PositionReport,
    RetryableExecutionError,
    Side,
)
from trader.execution import ccxt_map as cm
from trader.execution.common import (
    LIBRARY_LOGGERS,
    LogRedactor,
    RateLimited,
    RetryPolicy,
    RetryStats,
    redacted,
    call_with_retry,
    dec,
    prepare_order,
    retry_after,
    retrying,
    venue_order_id,
)

log = logging.getLogger(__name__)

STOP_PREFIX = "dps-"


class _SentNoAnswer(Exception):
    pass


def rebase_urls(urls: Any, base_url: str) -> Any:
    """Every http(s) url in ccxt's ``urls['api']`` tree moved to ``base_url`` (paths kept)."""
    base = base_url.rstrip("/")
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        p = urlsplit(urls)
        return base + p.path + (f"?{p.query}" if p.query else "")
    if isinstance(urls, dict):
        return {k: rebase_urls(v, base) for k, v in urls.items()}
    return urls


class CcxtExecution:
    def __init__(
        self,
        *,
        venue: str = "binanceusdm",
        api_key: str,
        api_secret: str,
        mode: Mode = "testnet",
        base_url: str | None = None,
        timeout_s: float = 10.0,
        recv_window_ms: int = 5000,
        retry: RetryPolicy | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        if mode == "paper":
            raise ValueError("CcxtExecution is for mode testnet/live; paper trading uses the paper exchange")
        if not hasattr(ccxt, venue):
            raise ValueError(f"unknown ccxt exchange id {venue!r}")
        self.exchange = venue
        self.mode: Mode = mode
        self.retry = retry or RetryPolicy()
        self.stats = RetryStats()
        LogRedactor.protect(api_key, api_secret, loggers=LIBRARY_LOGGERS)
        self._ex = getattr(ccxt, venue)(
            {
                "apiKey": api_key,
                "secret": api_secret,
                "timeout": int(timeout_s * 1000),
                "enableRateLimit": True,
                # open_orders(None) is a deliberate all-symbol query (Binance weighs it 40x): no ccxt refusal
                "options": {
                    "fetchCurrencies": False,
                    "recvWindow": recv_window_ms,
                    "warnOnFetchOpenOrdersWithoutSymbol": False,
                    **(options or {}),
                },
            }
        )
        if base_url:
            self._ex.urls["api"] = rebase_urls(self._ex.urls["api"], base_url)
        elif mode == "testnet":
            if hasattr(self._ex, "enable_demo_trading") and venue.startswith("binance"):
                self._ex.enable_demo_trading(True)
            else:
                self._ex.set_sandbox_mode(True)
        self._instruments: dict[str, Instrument] = {}
        self._unified: dict[str, str] = {}  # market id -> ccxt symbol
        self._cids: dict[str, str] = {}  # venue client id -> client_order_id
        self._watch: dict[str, tuple[str, str]] = {}  # venue client id -> (symbol, client_order_id), until terminal
        self._emitted: dict[str, tuple[str, Decimal]] = {}  # venue client id -> (status, filled) reported
        self._traded: set[str] = set()  # symbols whose account trades are polled
        self._cid_by_order: dict[str, str] = {}  # exchange order id -> client_order_id
        self._seen_fills: set[str] = set()
        self._fills_since_ms = int(time.time() * 1000) - 60_000
        self._positions: dict[str, PositionReport] = {}

    def __repr__(self) -> str:
        return f"CcxtExecution(venue={self.exchange!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------ calls
    def _call(self, what: str, symbol: str, fn: Any, *args: Any, **kw: Any) -> Any:
        where = f"{self.exchange} {symbol} {what}".replace("  ", " ")
        try:
            return fn(*args, **kw)
        except ccxt.BaseError as e:
            kind, code = cm.classify(e), cm.error_code(e)
            msg = redacted(f"{where}: {type(e).__name__}: {e}")
            if kind == "rate":
                hdr = getattr(self._ex, "last_response_headers", None) or {}
                ra = hdr.get("Retry-After") or hdr.get("retry-after")
                raise RateLimited(msg, retry_after_s=retry_after(ra)) from None
            if kind in ("unknown", "retry") and what == "create":
                raise _SentNoAnswer(msg) from None  # timeout / dropped / 5xx: it may have gone in
            if kind in ("retry", "unknown"):
                raise RetryableExecutionError(msg) from None
            if kind in ("reject", "duplicate", "not_found"):
                raise OrderRejected(msg, code=code or kind) from None
            raise ExecutionError(msg) from None

    def _retry(self, what: str, symbol: str, fn: Any, *args: Any, **kw: Any) -> Any:
        return call_with_retry(
            lambda: self._call(what, symbol, fn, *args, **kw),
            self.retry,
            self.stats,
            log,
            f"{self.exchange} {symbol} {what}",
        )

    # ------------------------------------------------------------------ instruments, leverage
    def _load(self) -> None:
        if not self._unified:
            markets = self._retry("load_markets", "", self._ex.load_markets)
            for sym, m in markets.items():
                if m.get("contract") and m.get("linear") and m.get("active") is not False:
                    self._unified.setdefault(m["id"], sym)

    def instruments(self, symbols: list[str]) -> dict[str, Instrument]:
        self._load()
        unknown = [s for s in symbols if s not in self._unified]
        if unknown:
            raise ExecutionError(f"{self.exchange}: unknown linear contract(s) {unknown}")
        for s in symbols:
            if s not in self._instruments:
                self._instruments[s] = cm.instrument(self.exchange, s, self._ex.markets[self._unified[s]])
        return {s: self._instruments[s] for s in symbols}

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        inst = self.instruments([symbol])[symbol]
        if (
            leverage < 1
            or leverage != leverage.to_integral_value()
            or (inst.max_leverage is not None and leverage > inst.max_leverage)
        ):
            raise OrderRejected(
                f"{self.exchange} {symbol}: leverage {leverage} must be a whole number"
                f" in 1..{inst.max_leverage or 125}",
                code="local",
            )
        self._retry("set_leverage", symbol, self._ex.set_leverage, int(leverage), self._unified[symbol])

    # ------------------------------------------------------------------ orders
    def submit(self, req: OrderRequest) -> OrderReport:
        req = prepare_order(req, self.instruments([req.symbol])[req.symbol])
        vid = venue_order_id(req.client_order_id)
        self._cids[vid] = req.client_order_id
        where = f"{self.exchange} {req.symbol} create {req.client_order_id}"
        existing = self.lookup(req.symbol, req.client_order_id)
        if existing is not None:
            log.info("%s: client id %s already known to the venue (redelivery): returning it", where, vid)
            return self._handed_out(vid, existing)
        params: dict[str, Any] = {"clientOrderId": vid}
        if req.reduce_only:
            params["reduceOnly"] = True
        args = (
            self._unified[req.symbol],
            req.order_type,
            req.side,
            float(req.qty),
            float(req.price) if req.order_type == "limit" and req.price is not None else None,
            params,
        )
        for attempt in retrying(self.retry, self.stats, log, where):
            with attempt:
                try:
                    o = self._call("create", req.symbol, self._ex.create_order, *args)
                except OrderRejected as e:
                    if e.code not in cm.BINANCE_DUPLICATE and e.code != "duplicate":
                        raise
                    found = self._lookup_or_unknown(req, where)
                    if found is None:
                        raise OrderOutcomeUnknown(f"{where}: duplicate client id but the order is not found") from None
                    return self._handed_out(vid, found)
                except _SentNoAnswer as e:
                    log.warning("%s: %s; looking the order up before anything is re-sent", where, e)
                    found = self._lookup_or_unknown(req, where)
                    if found is not None:
                        return self._handed_out(vid, found)
                    raise RetryableExecutionError(f"{where}: no answer and no such order: re-sending") from None
                return self._handed_out(vid, cm.order_report(self.exchange, req.symbol, o, req.client_order_id))
        raise AssertionError("unreachable")  # pragma: no cover - tenacity reraises

    def _handed_out(self, vid: str, rep: OrderReport) -> OrderReport:
        """``submit`` returns ``rep``: later changes of it (and its fills) come from ``poll_events``."""
        self._emitted[vid] = (rep.status, rep.filled_qty)
        self._traded.add(rep.symbol)
        if rep.exchange_order_id:  # its fills name the exchange order id: map them back to our id
            self._cid_by_order[rep.exchange_order_id] = rep.client_order_id
        if not rep.terminal:
            self._watch[vid] = (rep.symbol, rep.client_order_id)
        return rep

    def _lookup_or_unknown(self, req: OrderRequest, where: str) -> OrderReport | None:
        try:
            return self.lookup(req.symbol, req.client_order_id)
        except ExecutionError as e:
            raise OrderOutcomeUnknown(f"{where}: outcome unknown, lookup failed too: {e}") from None

    def lookup(self, symbol: str, client_order_id: str) -> OrderReport | None:
        self._load()
        vid = venue_order_id(client_order_id)
        try:
            o = self._retry("lookup", symbol, self._ex.fetch_order, "", self._unified[symbol], {"clientOrderId": vid})
        except OrderRejected as e:
            if e.code in cm.BINANCE_NOT_FOUND or e.code == "not_found":
                return None
            raise
        rep = cm.order_report(self.exchange, symbol, o, client_order_id)
        if rep.exchange_order_id:
            self._cid_by_order[rep.exchange_order_id] = client_order_id
        return rep

    def cancel(self, symbol: str, client_order_id: str) -> OrderReport | None:
        self._load()
        try:
            self._retry(
                "cancel",
                symbol,
                self._ex.cancel_order,
                "",
                self._unified[symbol],
                {"clientOrderId": venue_order_id(client_order_id)},
            )
        except OrderRejected as e:
            if e.code not in cm.BINANCE_NOT_FOUND and e.code != "not_found":
                raise
        return self.lookup(symbol, client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        self._load()
        rows = self._retry(
            "open_orders", symbol or "", self._ex.fetch_open_orders, self._unified[symbol] if symbol else None
        )
        by_unified = {v: k for k, v in self._unified.items()}
        return [
            cm.order_report(
                self.exchange,
                by_unified.get(o["symbol"], o["symbol"]),
                o,
                self._cids.get(o.get("clientOrderId") or "", o.get("clientOrderId") or ""),
            )
            for o in rows
        ]

    # ------------------------------------------------------------------ stop, positions, balance
    def _stops(self, symbol: str) -> list[dict[str, Any]]:
        rows = self._retry(
            "open_stops", symbol, self._ex.fetch_open_orders, self._unified[symbol], None, None, {"trigger": True}
        )
        return [o for o in rows if str(o.get("clientOrderId") or "").startswith(STOP_PREFIX)]

    def set_stop(self, symbol: str, stop_price: Decimal | None) -> None:
        """Cancel our closePosition STOP_MARKET(s) on ``symbol`` and place the new one."""
        inst = self.instruments([symbol])[symbol]
        pos = self.positions([symbol]) if stop_price is not None else []
        if stop_price is not None and not pos:
            raise OrderRejected(f"{self.exchange} {symbol}: no position to put a stop on", code="local")
        for o in self._stops(symbol):
            try:
                self._retry(
                    "cancel_stop",
                    symbol,
                    self._ex.cancel_order,
                    "",
                    self._unified[symbol],
                    {"trigger": True, "clientAlgoId": o["clientOrderId"]},
                )
            except OrderRejected as e:
                if e.code not in cm.BINANCE_NOT_FOUND:
                    raise
        if stop_price is None:
            return
        side: Side = "sell" if pos[0].qty > 0 else "buy"
        px = inst.round_price(stop_price, side)
        stop_id = f"{STOP_PREFIX}{symbol}-{time.time_ns() // 1_000_000}"[:36]
        self._retry(
            "set_stop",
            symbol,
            self._ex.create_order,
            self._unified[symbol],
            "market",
            side,
            None,
            None,
            {"stopLossPrice": float(px), "closePosition": True, "clientOrderId": stop_id},
        )

    def positions(self, symbols: list[str] | None = None) -> list[PositionReport]:
        self._load()
        wanted = [self._unified[s] for s in symbols] if symbols else None
        rows = self._retry("positions", ",".join(symbols or []), self._ex.fetch_positions, wanted)
        by_unified = {v: k for k, v in self._unified.items()}
        out = []
        for p in rows:
            sym = by_unified.get(p.get("symbol"), p.get("symbol"))
            stops = self._stops(sym) if sym in self._unified else []
            stop = dec(stops[0].get("triggerPrice")) if stops else None
            rep = cm.position_report(self.exchange, sym, p, stop)
            if rep is not None:
                out.append(rep)
        return out

    def balance(self) -> dict[str, Decimal]:
        return cm.equity(self._retry("balance", "", self._ex.fetch_balance))

    # ------------------------------------------------------------------ events (REST polling)
    def poll_events(self) -> list[ExecEvent]:
        events: list[ExecEvent] = []
        symbols = sorted(self._traded | set(self._positions))
        for sym in symbols:
            trades = self._retry("fills", sym, self._ex.fetch_my_trades, self._unified[sym], self._fills_since_ms)
            for t in sorted(trades, key=lambda t: t.get("timestamp") or 0):
                fid = str(t.get("id"))
                if fid in self._seen_fills:
                    continue
                self._seen_fills.add(fid)
                cid = self._cid_by_order.get(str(t.get("order")), str(t.get("order") or ""))
                events.append(cm.fill_report(self.exchange, sym, t, cid))
        if events:
            self._fills_since_ms = max(self._fills_since_ms, max(e.ts_ns for e in events) // 1_000_000 - 5_000)
        for vid, (sym, cid) in list(self._watch.items()):
            now = self.lookup(sym, cid)
            if now is not None and self._emitted.get(vid) != (now.status, now.filled_qty):
                self._emitted[vid] = (now.status, now.filled_qty)
                events.append(now)
            if now is None or now.terminal:
                self._watch.pop(vid, None)
        current = {p.symbol: p for p in self.positions(symbols or None)} if symbols else {}
        for sym in set(current) | set(self._positions):
            new, old = current.get(sym), self._positions.get(sym)
            if new is None and old is not None:
                events.append(
                    PositionReport(
                        exchange=self.exchange, symbol=sym, qty=Decimal(0), avg_price=Decimal(0), ts_ns=time.time_ns()
                    )
                )
            elif new is not None and (
                old is None or (new.qty, new.avg_price, new.stop_price) != (old.qty, old.avg_price, old.stop_price)
            ):
                events.append(new)
        self._positions = current
        return events

    def close(self) -> None:
        session = getattr(self._ex, "session", None)
        if session is not None:
            session.close()
