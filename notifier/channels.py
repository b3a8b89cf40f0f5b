"""Channels behind one interface (:class:`notifier.delivery.Channel`): Telegram through the real
aiogram client, and a generic JSON webhook (Discord- and Slack-compatible). Both are async
libraries; a private event loop on its own thread runs them for the notifier's sync consumer.

Errors are mapped to :class:`DeliveryError`: 429 -> ``retry_after``; 5xx, network errors and
timeouts -> transient; other 4xx (chat not found, bot blocked, bad request) -> permanent.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine

import aiohttp
from notifier.delivery import DeliveryError

SEND_TIMEOUT_S = 20.0
MAX_TEXT = 4000


class LoopThread:
    """An asyncio loop on a daemon thread; :meth:`run` executes a coroutine from sync code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = SEND_TIMEOUT_S + 5) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class TelegramChannel:
    def __init__(self, token: str, api_base_url: str | None = None) -> None:
        from aiogram import Bot  # aiogram is slow to import: only when Telegram is used
        from aiogram.client.session.aiohttp import AiohttpSession
        from aiogram.client.telegram import TelegramAPIServer

        self.runner = LoopThread("notifier-telegram")
        session = AiohttpSession(api=TelegramAPIServer.from_base(api_base_url)) if api_base_url else AiohttpSession()
        self.bot = Bot(token=token, session=session)

    def send(self, target: str, text: str) -> None:
        from aiogram.exceptions import (
            RestartingTelegram,
            TelegramAPIError,
            TelegramNetworkError,
            TelegramRetryAfter,
            TelegramServerError,
        )

        chat_id = int(target.split(":", 1)[1])
        try:
            self.runner.run(
                self.bot.send_message(chat_id=chat_id, text=text[:MAX_TEXT], request_timeout=int(SEND_TIMEOUT_S))
            )
        except TelegramRetryAfter as exc:
            raise DeliveryError(f"429: {exc.message}", retry_after=float(exc.retry_after)) from None
        except (TelegramServerError, RestartingTelegram, TelegramNetworkError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc.message}") from None
        except TelegramAPIError as exc:  # 400/401/403/404/409...: retrying will not help
            raise DeliveryError(f"{type(exc).__name__}: {exc.message}", permanent=True) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise DeliveryError("timeout") from None

    def close(self) -> None:
        try:
            self.runner.run(self.bot.session.close(), timeout=5)
        finally:
            self.runner.close()


class WebhookChannel:
    """POST ``{"content": text, "text": text}`` (Discord reads ``content``, Slack ``text``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = LoopThread("notifier-webhook")

    async def _post(self, text: str) -> tuple[int, str, str | None]:
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.post(self.url, json={"content": text[:2000], "text": text}) as r:
                return r.status, await r.text(), r.headers.get("Retry-After")

    def send(self, target: str, text: str) -> None:
        try:
            status, body, retry_after = self.runner.run(self._post(text))
        except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError) as exc:
            raise DeliveryError(f"webhook: {type(exc).__name__}") from None  # no URL: it may hold a token
        if 200 <= status < 300:
            return
        if status == 429:
            try:
                wait = float(retry_after) if retry_after else 1.0
            except ValueError:
                wait = 1.0
            raise DeliveryError("webhook: 429", retry_after=wait)
        raise DeliveryError(f"webhook: HTTP {status}: {body[:200]}", permanent=400 <= status < 500)

    def close(self) -> None:
        self.runner.close()
