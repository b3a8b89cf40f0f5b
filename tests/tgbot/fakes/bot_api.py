"""A local Telegram Bot API server for tests: aiohttp on 127.0.0.1 (random port, own thread).

aiogram posts form data (or multipart) to ``/bot<token>/<method>`` (see
``aiogram/client/session/aiohttp.py``) and reads ``{"ok": ..., "result": ...}`` or an error
with ``parameters.retry_after`` (``aiogram/client/session/base.py``). Point a bot at it with
``TelegramAPIServer.from_base(server.base_url)``.

Tests inject updates (:meth:`message`, :meth:`callback`) and read what the bot did
(:attr:`calls`, :meth:`wait_call`); :meth:`fail` queues faults (429 with ``retry_after``, 5xx).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

BOT_ID = 424242
BOT_USERNAME = "depthpilot_test_bot"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    ts: float = field(default_factory=time.monotonic)
    ok: bool = True  # False when a fault was served instead

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def chat_id(self) -> int | None:
        c = self.params.get("chat_id")
        return None if c is None else int(c)

    @property
    def reply_markup(self) -> dict[str, Any] | None:
        return self.params.get("reply_markup")

    def buttons(self) -> list[dict[str, Any]]:
        rm = self.reply_markup or {}
        return [b for row in rm.get("inline_keyboard", []) for b in row]


class FakeBotAPI:
    def __init__(self, token: str = "123456:TEST-fake-token-for-local-server") -> None:
        self.token = token
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._faults: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._fault_until: dict[str, tuple[float, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.deleted: list[tuple[int, int]] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeBotAPI":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-bot-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Bot API did not start")
        return self

    async def _start(self) -> None:
        self._cond = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)  # type: ignore[union-attr]
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "FakeBotAPI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ fault injection
    def fail(
        self, method: str, status: int, times: int = 1, retry_after: int | None = None, description: str = ""
    ) -> None:
        """Serve ``status`` for the next ``times`` calls of ``method``."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": status,
            "description": description
            or (f"Too Many Requests: retry after {retry_after}" if status == 429 else "Bad Gateway"),
        }
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        with self._lock:
            self._faults.setdefault(method, []).extend([(status, body)] * times)

    def fail_for(self, method: str, status: int, seconds: float) -> None:
        """Serve ``status`` for every call of ``method`` during the next ``seconds``."""
        with self._lock:
            self._fault_until[method] = (time.monotonic() + seconds, status)

    def _fault(self, method: str) -> tuple[int, dict[str, Any]] | None:
        with self._lock:
            q = self._faults.get(method)
            if q:
                return q.pop(0)
            until = self._fault_until.get(method)
            if until and time.monotonic() < until[0]:
                return until[1], {"ok": False, "error_code": until[1], "description": "Bad Gateway"}
        return None

    # ------------------------------------------------------------------ updates
    def _push(self, update: dict[str, Any]) -> int:
        uid = next(self._update_ids)
        update["update_id"] = uid

        async def add() -> None:
            assert self._cond is not None
            async with self._cond:
                self._updates.append(update)
                self._cond.notify_all()

        asyncio.run_coroutine_threadsafe(add(), self._loop).result(5)  # type: ignore[arg-type]
        return uid

    @staticmethod
    def _chat(chat_id: int, user_id: int) -> dict[str, Any]:
        if chat_id == user_id:
            return {"id": chat_id, "type": "private", "first_name": f"user{user_id}"}
        return {"id": chat_id, "type": "supergroup", "title": f"group{chat_id}"}

    def message(self, user_id: int, text: str, chat_id: int | None = None) -> int:
        """A user sends ``text`` (in a private chat unless ``chat_id`` names a group); returns
        the message id."""
        chat_id = user_id if chat_id is None else chat_id
        mid = next(self._message_ids)
        msg: dict[str, Any] = {
            "message_id": mid,
            "date": int(time.time()),
            "chat": self._chat(chat_id, user_id),
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            "text": text,
        }
        if text.startswith("/"):
            cmd_len = len(text.split()[0])
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": cmd_len}]
        self._push({"message": msg})
        return mid

    def callback(self, user_id: int, data: str, message: Call | dict[str, Any]) -> int:
        """A user taps an inline button ``data`` on a message the bot sent (``message`` is the
        Call of that sendMessage, or its result dict)."""
        result = message.params["_result"] if isinstance(message, Call) else message
        return self._push(
            {
                "callback_query": {
                    "id": str(next(self._message_ids)),
                    "from": {"id": user_id, "is_bot": False, "first_name": f"u{user_id}"},
                    "chat_instance": "1",
                    "data": data,
                    "message": result,
                }
            }
        )

    # ------------------------------------------------------------------ reading
    def snapshot(self, method: str | None = None, ok_only: bool = True) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if (method is None or c.method == method) and (c.ok or not ok_only)]

    def wait_call(self, pred: Callable[[Call], bool], timeout: float = 10.0, after: int = 0) -> Call:
        """Wait for a successful call (index >= ``after``) matching ``pred``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for c in self.calls[after:]:
                    if c.ok and pred(c):
                        return c
            time.sleep(0.02)
        raise AssertionError(
            f"no matching Bot API call within {timeout}s; calls: "
            f"{[(c.method, c.params.get('text', '')[:60]) for c in self.snapshot()]}"
        )

    def sent_to(self, chat_id: int) -> list[str]:
        return [c.text for c in self.snapshot("sendMessage") if c.chat_id == chat_id]

    # ------------------------------------------------------------------ the API
    async def _handle(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        if token != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        form = await request.post()
        params: dict[str, Any] = {}
        for k, v in form.items():
            s = v if isinstance(v, str) else v.file.read().decode()  # type: ignore[union-attr]
            if k in ("reply_markup", "allowed_updates", "commands"):
                try:
                    params[k] = json.loads(s)
                    continue
                except ValueError:
                    pass
            params[k] = s
        if method != "getUpdates":
            fault = self._fault(method)
            if fault is not None:
                with self._lock:
                    self.calls.append(Call(method, params, ok=False))
                return web.json_response(fault[1], status=fault[0])
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            result: Any = True  # setMyCommands, deleteWebhook, setWebhook, close...
        else:
            result = await handler(params)
        params["_result"] = result
        with self._lock:
            self.calls.append(Call(method, params))
        return web.json_response({"ok": True, "result": result})

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "depthpilot", "username": BOT_USERNAME}

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._cond is not None
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        async with self._cond:
            if offset:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]  # confirmed
            if not self._updates and timeout > 0:
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            return list(self._updates)

    def _msg(self, params: dict[str, Any], message_id: int | None = None) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        out: dict[str, Any] = {
            "message_id": message_id or next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "depthpilot"},
            "text": params.get("text", ""),
        }
        if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params["reply_markup"]:
            out["reply_markup"] = params["reply_markup"]
        return out

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._msg(params)

    async def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._msg(params, int(params["message_id"]))

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._msg(params, int(params["message_id"]))

    async def _m_deleteMessage(self, params: dict[str, Any]) -> bool:
        self.deleted.append((int(params["chat_id"]), int(params["message_id"])))
        return True
