"""Bybit v5 linear-perpetual execution through pybit's ``unified_trading.HTTP``.

pybit specifics this relies on (pybit 5.x ``_http_manager``): requests are signed
X-BAPI-SIGN = HMAC-SHA256(secret, timestamp + api_key + recv_window + payload); a non-zero
retCode raises ``InvalidRequestError`` (``status_code`` = retCode, ``resp_headers``), a
non-200 HTTP status ``FailedRequestError`` (``status_code`` = HTTP status); network errors
propagate as ``requests`` exceptions (``force_retry`` off). pybit would itself sleep and
re-send on its ``retry_codes`` (10002, 10006, ...): we empty that set and use one attempt so
that OUR backoff (tenacity, :mod:`trader.execution.common`) is the only one and is reported.
The venue is chosen by ``endpoint`` (set after construction for a mirror or a local fake).

Idempotency: ``orderLinkId`` is derived from the intent's ``client_order_id``; a duplicate
(110072) is looked up and returned; a create that times out is looked up before anything is
re-sent; only if that lookup also fails does ``submit`` raise ``OrderOutcomeUnknown``.

Events: the private WebSocket (``order``/``execution``/``position``, see
:mod:`trader.execution.bybit_stream`) when ``private_ws_url`` is given and it is up; REST
polling (executions since the last seen, watched orders, positions) when it is down, and once
to catch up when it comes back. Either way fills are deduplicated by execId.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

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
)
from trader.execution import bybit_map as bm
from trader.execution.bybit_stream import BybitPrivateStream
from trader.execution.common import (
    LIBRARY_LOGGERS,
    LogRedactor,
    RateLimited,
    RetryPolicy,
    RetryStats,
    redacted,
    call_with_retry,
    prepare_order,
    retry_after,
    retrying,
    venue_order_id,
)

log = logging.getLogger(__name__)


class _SentNoAnswer(Exception):
    """The create left but no answer came back (timeout / dropped connection)."""


class BybitExecution:
    exchange = bm.EXCHANGE

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        mode: Mode = "testnet",
        base_url: str | None = None,
        timeout_s: float = 10.0,
        recv_window_ms: int = 5000,
        category: str = "linear",
        retry: RetryPolicy | None = None,
        private_ws_url: str | None = None,
        ws_reconnect_s: float = 5.0,
    ) -> None:
        if mode == "paper":
            raise ValueError("BybitExecution is for mode testnet/live; paper trading uses the paper exchange")
        self.mode: Mode = mode
        self.category = category
        self.retry = retry or RetryPolicy()
        self.stats = RetryStats()
        LogRedactor.protect(api_key, api_secret, loggers=LIBRARY_LOGGERS)
        self._http = HTTP(
            testnet=(mode == "testnet"),
            api_key=api_key,
            api_secret=api_secret,
            timeout=timeout_s,
            recv_window=recv_window_ms,
            max_retries=1,
            force_retry=False,
            log_requests=False,
        )
        self._http.retry_codes = set()  # see module doc: our backoff, not pybit's sleep
        if base_url:
            self._http.endpoint = base_url.rstrip("/")
        self._instruments: dict[str, Instrument] = {}
        self._cids: dict[str, str] = {}  # orderLinkId -> client_order_id
        self._watch: dict[str, str] = {}  # orderLinkId -> symbol: orders polled until terminal
        self._emitted: dict[str, tuple[str, Decimal]] = {}  # orderLinkId -> (status, filled) reported
        self._seen_exec: set[str] = set()
        self._exec_since_ms = int(time.time() * 1000) - 60_000
        self._positions: dict[str, PositionReport] = {}
        self._stream = (
            BybitPrivateStream(url=private_ws_url, api_key=api_key, api_secret=api_secret, reconnect_s=ws_reconnect_s)
            if private_ws_url
            else None
        )

    def __repr__(self) -> str:
        return f"BybitExecution(mode={self.mode!r}, endpoint={self._http.endpoint!r})"

    # ------------------------------------------------------------------ calls
    def _call(self, what: str, fn: Any, **params: Any) -> dict[str, Any]:
        """One request; pybit/requests errors -> the domain's errors (secrets redacted)."""
        sym = params.get("symbol", "")
        where = f"bybit {sym} {what}".replace("  ", " ")
        try:
            return fn(**params).get("result") or {}
        except InvalidRequestError as e:
            code = int(e.status_code)
            msg = redacted(f"{where}: {e.message} (retCode {code})")
            if code in bm.NOT_MODIFIED:
                return {}
            if code == 10006:
                reset = (e.resp_headers or {}).get("X-Bapi-Limit-Reset-Timestamp")
                after = max(0.0, (int(reset) - time.time() * 1000) / 1000) if reset else 0.0
                raise RateLimited(msg, retry_after_s=after) from None
            if code in bm.RETRYABLE:
                if what == "create" and code in bm.SERVER_SIDE:
                    raise _SentNoAnswer(msg) from None  # it may have been placed: look it up first
                raise RetryableExecutionError(msg) from None
            if code in bm.AUTH:
                raise ExecutionError(msg) from None
            raise OrderRejected(msg, code=str(code)) from None
        except FailedRequestError as e:
            msg = redacted(f"{where}: HTTP {e.status_code} {e.message}")
            if e.status_code in (429, 403):
                raise RateLimited(msg, retry_after_s=retry_after((e.resp_headers or {}).get("Retry-After"))) from None
            if isinstance(e.status_code, int) and e.status_code >= 500:
                if what == "create":
                    raise _SentNoAnswer(msg) from None  # a gateway error after the order went in?
                raise RetryableExecutionError(msg) from None
            raise ExecutionError(msg) from None
        except (requests.Timeout, requests.ConnectionError) as e:
            if what == "create":
                raise _SentNoAnswer(redacted(f"{where}: {type(e).__name__}")) from None
            raise RetryableExecutionError(redacted(f"{where}: {type(e).__name__}: {e}")) from None

    def _retry(self, what: str, fn: Any, **params: Any) -> dict[str, Any]:
        return call_with_retry(
            lambda: self._call(what, fn, **params),
            self.retry,
            self.stats,
            log,
            f"bybit {params.get('symbol', '')} {what}",
        )

    # ------------------------------------------------------------------ instruments, leverage
    def instruments(self, symbols: list[str]) -> dict[str, Instrument]:
        for sym in [s for s in symbols if s not in self._instruments]:  # one symbol per call: no paging
            res = self._retry("instruments", self._http.get_instruments_info, category=self.category, symbol=sym)
            for row in res.get("list", []):
                if row.get("symbol") == sym:
                    self._instruments[sym] = bm.instrument(row)
        unknown = [s for s in symbols if s not in self._instruments]
        if unknown:
            raise ExecutionError(f"bybit: unknown {self.category} symbol(s) {unknown}")
        return {s: self._instruments[s] for s in symbols}

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        inst = self.instruments([symbol])[symbol]
        if leverage < 1 or (inst.max_leverage is not None and leverage > inst.max_leverage):
            raise OrderRejected(f"bybit {symbol}: leverage {leverage} outside 1..{inst.max_leverage}", code="local")
        lev = format(leverage.normalize(), "f")  # 10, not 1E+1
        self._retry(
            "set_leverage",
            self._http.set_leverage,
            category=self.category,
            symbol=symbol,
            buyLeverage=lev,
            sellLeverage=lev,
        )

    # ------------------------------------------------------------------ orders
    def _cid(self, link: str) -> str:
        return self._cids.get(link, link)

    def submit(self, req: OrderRequest) -> OrderReport:
        req = prepare_order(req, self.instruments([req.symbol])[req.symbol])
        link = venue_order_id(req.client_order_id)
        self._cids[link] = req.client_order_id
        params: dict[str, Any] = {
            "category": self.category,
            "symbol": req.symbol,
            "side": bm.side_out(req.side),
            "orderType": "Market" if req.order_type == "market" else "Limit",
            "qty": format(req.qty, "f"),
            "orderLinkId": link,
            "reduceOnly": req.reduce_only,
        }
        if req.order_type == "limit":
            params.update(price=format(req.price, "f"), timeInForce="GTC")
        where = f"bybit {req.symbol} create {req.client_order_id}"
        for attempt in retrying(self.retry, self.stats, log, where):
            with attempt:
                try:
                    res = self._call("create", self._http.place_order, **params)
                except OrderRejected as e:
                    if e.code != str(bm.DUPLICATE_LINK_ID):
                        raise
                    log.info("%s: orderLinkId %s already exists (redelivery): returning it", where, link)
                    found = self._lookup_or_unknown(req.symbol, link, where)
                    if found is None:
                        raise OrderOutcomeUnknown(
                            f"{where}: duplicate orderLinkId but the order is not found"
                        ) from None
                    return self._handed_out(link, req.symbol, found)
                except _SentNoAnswer as e:
                    log.warning("%s: %s; looking the order up before anything is re-sent", where, e)
                    found = self._lookup_or_unknown(req.symbol, link, where)
                    if found is not None:
                        return self._handed_out(link, req.symbol, found)
                    raise RetryableExecutionError(f"{where}: no answer and no such order: re-sending") from None
                report = OrderReport(
                    client_order_id=req.client_order_id,
                    exchange=self.exchange,
                    symbol=req.symbol,
                    side=req.side,
                    qty=req.qty,
                    status="accepted",
                    exchange_order_id=res.get("orderId", ""),
                    reason=req.reason,
                    ts_ns=time.time_ns(),
                )
                try:
                    report = self.lookup(req.symbol, req.client_order_id) or report
                except ExecutionError as e:  # accepted; fills will come through poll_events
                    log.warning("%s: accepted, status lookup failed: %s", where, e)
                return self._handed_out(link, req.symbol, report)
        raise AssertionError("unreachable")  # pragma: no cover - tenacity reraises

    def _handed_out(self, link: str, symbol: str, report: OrderReport) -> OrderReport:
        """``submit`` returns ``report``: later changes of it come from ``poll_events``."""
        self._emitted[link] = (report.status, report.filled_qty)
        if not report.terminal:
            self._watch[link] = symbol
        return report

    def _lookup_or_unknown(self, symbol: str, link: str, where: str) -> OrderReport | None:
        try:
            return self._lookup_link(symbol, link)
        except ExecutionError as e:
            raise OrderOutcomeUnknown(f"{where}: outcome unknown, lookup failed too: {e}") from None

    def _lookup_link(self, symbol: str, link: str) -> OrderReport | None:
        for fn in (self._http.get_open_orders, self._http.get_order_history):
            res = self._retry("lookup", fn, category=self.category, symbol=symbol, orderLinkId=link)
            rows = res.get("list") or []
            if rows:
                rep = bm.order_report(rows[0], self._cid(link))
                return rep
        return None

    def lookup(self, symbol: str, client_order_id: str) -> OrderReport | None:
        link = venue_order_id(client_order_id)
        self._cids.setdefault(link, client_order_id)
        return self._lookup_link(symbol, link)

    def cancel(self, symbol: str, client_order_id: str) -> OrderReport | None:
        link = venue_order_id(client_order_id)
        try:
            self._retry("cancel", self._http.cancel_order, category=self.category, symbol=symbol, orderLinkId=link)
        except OrderRejected as e:
            if e.code != str(bm.ORDER_NOT_FOUND):
                raise
        return self.lookup(symbol, client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        scope = {"symbol": symbol} if symbol else {"settleCoin": "USDT"}
        res = self._retry("open_orders", self._http.get_open_orders, category=self.category, openOnly=0, **scope)
        return [bm.order_report(o, self._cid(o.get("orderLinkId", ""))) for o in res.get("list") or []]

    # ------------------------------------------------------------------ positions, stop, balance
    def positions(self, symbols: list[str] | None = None) -> list[PositionReport]:
        out: list[PositionReport] = []
        for scope in [{"symbol": s} for s in symbols] if symbols else [{"settleCoin": "USDT"}]:
            res = self._retry("positions", self._http.get_positions, category=self.category, **scope)
            out += [p for p in (bm.position_report(r) for r in res.get("list") or []) if p is not None]
        return out

    def set_stop(self, symbol: str, stop_price: Decimal | None) -> None:
        """Exchange-side stop-loss on the whole position (``set_trading_stop``, tpslMode Full)."""
        inst = self.instruments([symbol])[symbol]
        sl = "0"
        if stop_price is not None:
            pos = self.positions([symbol])
            if not pos:
                raise OrderRejected(f"bybit {symbol}: no position to put a stop on", code="local")
            # the stop closes the position: round towards the market (never a looser stop)
            sl = format(inst.round_price(stop_price, "sell" if pos[0].qty > 0 else "buy"), "f")
        self._retry(
            "set_stop",
            self._http.set_trading_stop,
            category=self.category,
            symbol=symbol,
            stopLoss=sl,
            tpslMode="Full",
            slTriggerBy="LastPrice",
            positionIdx=0,
        )

    def balance(self) -> dict[str, Decimal]:
        return bm.balances(self._retry("balance", self._http.get_wallet_balance, accountType="UNIFIED"))

    # ------------------------------------------------------------------ events
    def poll_events(self) -> list[ExecEvent]:
        """New fills (deduplicated by execId), status changes of orders this client placed, and
        changed positions: from the private WebSocket when it is up, from REST polling when it
        is not (plus one REST catch-up right after it comes back)."""
        events: list[ExecEvent] = []
        if self._stream is None:
            return self._rest_poll()
        ok = self._stream.ensure()
        for msg in self._stream.drain():
            events += self._from_ws(msg)
        if not ok:
            events += self._rest_poll()
        elif self._stream.down_since is not None:
            events += self._rest_poll()  # what happened while it was down
            self._stream.mark_recovered()
        return events

    @property
    def stream_healthy(self) -> bool:
        return self._stream is not None and self._stream.healthy()

    @property
    def stream_problem(self) -> str:
        """'' unless the private stream keeps failing (a refused key, an unanswered handshake):
        one line for the health check (REST polling covers meanwhile)."""
        st = self._stream
        if st is None or not st.failures:
            return ""
        return (
            f"bybit private stream failing ({st.failures} attempts in a row, REST polling meanwhile): {st.last_error}"
        )

    def _emit_fill(self, e: dict[str, Any]) -> list[ExecEvent]:
        if e["execId"] in self._seen_exec or e.get("execType", "Trade") != "Trade":
            return []
        self._seen_exec.add(e["execId"])
        self._exec_since_ms = max(self._exec_since_ms, int(e.get("execTime") or 0) - 5_000)
        return [bm.fill_report(e, self._cid(e.get("orderLinkId", "")))]

    def _emit_order(self, rep: OrderReport) -> list[ExecEvent]:
        link = venue_order_id(rep.client_order_id)
        state = (rep.status, rep.filled_qty)
        if self._emitted.get(link) == state:
            return []
        self._emitted[link] = state
        if rep.terminal:
            self._watch.pop(link, None)
        return [rep]

    def _emit_position(self, sym: str, new: PositionReport | None) -> list[ExecEvent]:
        old = self._positions.get(sym)
        if new is None:
            if old is None:
                return []
            self._positions.pop(sym)
            return [
                PositionReport(
                    exchange=self.exchange, symbol=sym, qty=Decimal(0), avg_price=Decimal(0), ts_ns=time.time_ns()
                )
            ]
        if old is not None and (new.qty, new.avg_price, new.stop_price) == (old.qty, old.avg_price, old.stop_price):
            return []
        self._positions[sym] = new
        return [new]

    def _from_ws(self, msg: dict[str, Any]) -> list[ExecEvent]:
        topic, rows, out = msg.get("topic", ""), msg.get("data") or [], []
        for r in rows:
            if r.get("category", self.category) != self.category:
                continue
            if topic == "execution":
                out += self._emit_fill(r)
            elif topic == "order":
                out += self._emit_order(bm.order_report(r, self._cid(r.get("orderLinkId", ""))))
            elif topic == "position":
                out += self._emit_position(r["symbol"], bm.position_report(r))
        return out

    def _rest_poll(self) -> list[ExecEvent]:
        events: list[ExecEvent] = []
        res = self._retry(
            "executions", self._http.get_executions, category=self.category, startTime=self._exec_since_ms
        )
        for e in sorted(res.get("list") or [], key=lambda e: int(e.get("execTime") or 0)):
            events += self._emit_fill(e)
        for link, symbol in list(self._watch.items()):
            now = self._lookup_link(symbol, link)
            if now is None:
                self._watch.pop(link, None)
            else:
                events += self._emit_order(now)
        current = {p.symbol: p for p in self.positions()}
        for sym in sorted(set(current) | set(self._positions)):
            events += self._emit_position(sym, current.get(sym))
        return events

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._http.client.close()
