"""Runs every :class:`~trader.domain.ExecutionClient` call on ONE worker thread, so the bus
consumers never block on a venue (an HTTP round trip, a retry back-off).

* Jobs are queued (``submit``, ``set_stop`` coalesced per symbol to the latest price, ``book``
  for the paper exchange, ``call`` for anything else with a Future). Between jobs the worker
  polls ``client.poll_events()`` every ``poll_interval_s``; the events go to ``on_events``.
* Retryable venue errors (rate limit, network, 5xx) are retried with exponential back-off
  (tenacity) up to ``retry_deadline_s`` and then reported; ``OrderOutcomeUnknown`` is resolved
  by looking the order up by its client order id before anything is re-sent; ``OrderRejected``
  becomes a ``rejected`` OrderReport plus an error report. Nothing is swallowed: every failure
  reaches ``on_error(kind, symbol, message)``.
* A worker that dies sets :attr:`failure`; the service turns that into a degraded status.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from decimal import Decimal
from typing import Any, Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from trader.domain import (
    ExecEvent,
    ExecutionClient,
    ExecutionError,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderReport,
    OrderRequest,
    RetryableExecutionError,
)

log = logging.getLogger("trader.executor")

_STOP = object()


class ExecWorker:
    def __init__(
        self,
        client: ExecutionClient,
        on_events: Callable[[list[ExecEvent]], None],
        on_error: Callable[[str, str, str], None],
        *,
        poll_interval_s: float = 0.05,
        retry_deadline_s: float = 10.0,
        name: str = "trader-exec",
    ) -> None:
        self.client = client
        self.on_events = on_events
        self.on_error = on_error
        self.poll_interval_s = poll_interval_s
        self.retry_deadline_s = retry_deadline_s
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._stops: dict[str, Decimal | None] = {}
        self._stops_lock = threading.Lock()
        on_book = getattr(client, "on_book", None)  # an execution that simulates on books (paper)
        self._on_book: Callable[[Any], None] | None = on_book if callable(on_book) else None
        self._feeds_books = self._on_book is not None
        self.failure = ""
        self.counters = {"submitted": 0, "rejected": 0, "retried": 0, "errors": 0, "stops": 0, "polls": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ producer side (any thread)
    def start(self) -> "ExecWorker":
        self._thread.start()
        return self

    def submit(self, req: OrderRequest) -> None:
        self._jobs.put(("submit", req))

    def set_stop(self, symbol: str, price: Decimal | None) -> None:
        with self._stops_lock:
            pending = symbol in self._stops
            self._stops[symbol] = price
        if not pending:
            self._jobs.put(("stop", symbol))

    def book(self, book: Any) -> bool:
        """Hand a book to an execution that simulates on books (paper; True); others ignore it."""
        if self._feeds_books:
            self._jobs.put(("book", book))
        return self._feeds_books

    def call(self, fn: Callable[[ExecutionClient], Any]) -> Future:
        fut: Future = Future()
        self._jobs.put(("call", fn, fut))
        return fut

    def stop(self, timeout: float = 5.0) -> None:
        self._jobs.put(_STOP)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def backlog(self) -> int:
        return self._jobs.qsize()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        try:
            next_poll = time.monotonic()
            while True:
                timeout = max(0.0, next_poll - time.monotonic())
                try:
                    job = self._jobs.get(timeout=timeout)
                except queue.Empty:
                    job = None
                if job is _STOP:
                    return
                if job is not None:
                    self._do(job)
                if time.monotonic() >= next_poll or job is not None and job[0] in ("submit", "book"):
                    self._poll()
                    next_poll = time.monotonic() + self.poll_interval_s
        except BaseException as exc:  # noqa: BLE001 - recorded: the service reports itself degraded
            self.failure = f"execution worker died: {type(exc).__name__}: {exc}"
            log.exception("execution worker died")
            raise

    def _poll(self) -> None:
        try:
            events = self.client.poll_events()
        except ExecutionError as exc:
            self.counters["errors"] += 1
            self.on_error("execution_error", "", f"polling {self.client.exchange} failed: {exc}")
            return
        self.counters["polls"] += 1
        if events:
            self.on_events(list(events))

    def _retrying(self) -> Retrying:
        def count(_state: Any) -> None:
            self.counters["retried"] += 1

        return Retrying(
            retry=retry_if_exception_type(RetryableExecutionError),
            reraise=True,
            before_sleep=count,
            stop=stop_after_delay(self.retry_deadline_s),
            wait=wait_exponential(0.05, max=2.0),
        )

    def _do(self, job: tuple) -> None:
        kind = job[0]
        try:
            if kind == "book":
                if self._on_book is not None:  # only queued when it is (see book())
                    self._on_book(job[1])
            elif kind == "submit":
                self._submit(job[1])
            elif kind == "stop":
                with self._stops_lock:
                    price = self._stops.pop(job[1])
                self._retrying()(self.client.set_stop, job[1], price)
                self.counters["stops"] += 1
            elif kind == "call":
                fut: Future = job[2]
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(self._retrying()(job[1], self.client))
                    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
                        fut.set_exception(exc)
        except ExecutionError as exc:
            self.counters["errors"] += 1
            symbol = job[1] if kind == "stop" else ""
            self.on_error("execution_error", symbol, f"{kind} on {self.client.exchange} failed: {exc}")

    def _submit(self, req: OrderRequest) -> None:
        try:
            rep = self._retrying()(self.client.submit, req)
        except OrderOutcomeUnknown as exc:
            log.warning(
                "order %s outcome unknown (%s): looking it up before anything is re-sent", req.client_order_id, exc
            )
            found = self._retrying()(self.client.lookup, req.symbol, req.client_order_id)
            # None: never reached the venue, so sending the same client id again is safe
            rep = found if found is not None else self._retrying()(self.client.submit, req)
        except OrderRejected as exc:
            self.counters["rejected"] += 1
            rep = OrderReport(
                req.client_order_id,
                req.exchange,
                req.symbol,
                req.side,
                req.qty,
                "rejected",
                reason=str(exc),
                ts_ns=req.ts_ns,
            )
            self.on_error("order_rejected", req.symbol, str(exc))
        except RetryableExecutionError as exc:
            self.counters["errors"] += 1
            self.on_error(
                "execution_error",
                req.symbol,
                f"order {req.client_order_id} not sent after {self.retry_deadline_s:g} s of retries: {exc}",
            )
            rep = OrderReport(
                req.client_order_id,
                req.exchange,
                req.symbol,
                req.side,
                req.qty,
                "rejected",
                reason=f"venue unavailable: {exc}",
                ts_ns=req.ts_ns,
            )
        self.counters["submitted"] += 1
        self.on_events([rep])
