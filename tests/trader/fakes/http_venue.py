"""What the local fake venues (:mod:`tests.trader.fakes.bybit_v5`,
:mod:`tests.trader.fakes.binance_usdm`) share: the HTTP plumbing, the request log, queued faults
and the HMAC-SHA256 signatures both venues use.

:class:`FakeHTTPVenue` runs ``http.server`` on 127.0.0.1 (random free port) in a thread and hands
every request to the subclass's ``_serve(handler, method)``; ``METHODS`` names the HTTP methods it
answers. Every request is recorded (``requests``, :meth:`FakeHTTPVenue.hits`); ``fail(path, kind,
times, method=None)`` queues faults for the next requests to ``path`` (only ``method`` ones when
given), taken by :meth:`FakeHTTPVenue._take_fault`. What a fault means is the venue's own; a kind
the venue does not know (``"ok"``) gives a normal answer, to let one request through before a fault.

Test-only code: never talks to anything but loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


def hmac_sha256(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` with ``secret`` (how Bybit and Binance sign requests)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signature_ok(secret: str, payload: str, signature: str) -> bool:
    return bool(signature) and hmac.compare_digest(hmac_sha256(secret, payload), signature)


@dataclass
class Req:
    method: str
    path: str
    params: dict[str, Any]
    t: float = field(default_factory=time.monotonic)
    answered: str = ""  # the venue's code for the answer (retCode / HTTP status / error code) or fault


class FakeHTTPVenue:
    NAME = "fake-venue"
    METHODS: tuple[str, ...] = ("GET", "POST")

    def __init__(self, *, api_key: str, api_secret: str, delay_s: float) -> None:
        self.keys = {api_key: api_secret}
        self.delay_s = delay_s
        self.requests: list[Req] = []
        self._faults: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # ------------------------------------------------------------------ control
    def start(self) -> Any:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

        for method in self.METHODS:
            setattr(Handler, f"do_{method}", lambda h, _m=method: fake._serve(h, _m))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.NAME, daemon=True
        ).start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, path: str, kind: str, times: int = 1, method: str | None = None) -> None:
        """The next ``times`` requests to ``path`` (only ``method`` ones if given) get ``kind``."""
        key = f"{method} {path}" if method else path
        self._faults.setdefault(key, deque()).extend([kind] * times)

    def hits(self, path: str, method: str | None = None) -> list[Req]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    # ------------------------------------------------------------------ HTTP
    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def _take_fault(self, rec: Req) -> str:
        """Record ``rec`` and take the fault queued for it ("" = none): a method-specific one first."""
        with self._lock:
            self.requests.append(rec)
            faults = self._faults.get(f"{rec.method} {rec.path}") or self._faults.get(rec.path)
            return faults.popleft() if faults else ""

    def _delayed(self, rec: Req) -> None:
        """The ``"delay"`` fault: the request was processed; answer only after ``delay_s``."""
        rec.answered = "delay"
        time.sleep(self.delay_s)

    @staticmethod
    def _body(h: BaseHTTPRequestHandler) -> str:
        return h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): the request was still processed
