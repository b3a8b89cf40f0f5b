"""The generic webhook channel against a local aiohttp server: Discord/Slack-style JSON,
429 Retry-After, 5xx transient, 4xx permanent; the URL (it may hold a token) is never in errors."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web

from notifier.channels import WebhookChannel
from notifier.delivery import Deliverer, DeliveryError, RateLimiter


class Hook:
    def __init__(self) -> None:
        self.replies: list[tuple[int, dict]] = []
        self.got: list[dict] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            self.got.append(await request.json())
            status, headers = self.replies.pop(0) if self.replies else (204, {})
            return web.Response(status=status, headers=headers, text="nope" if status >= 400 else "")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hooks/{token}", handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()

        threading.Thread(
            target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()), daemon=True
        ).start()
        ready.wait(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_webhook_channel():
    hook = Hook()
    url = f"http://127.0.0.1:{hook.port}/hooks/SECRET-TOKEN-123"
    ch = WebhookChannel(url)
    try:
        ch.send("webhook", "hello")
        assert hook.got[-1] == {"content": "hello", "text": "hello"}
        hook.replies.append((429, {"Retry-After": "2"}))
        with pytest.raises(DeliveryError) as e:
            ch.send("webhook", "x")
        assert e.value.retry_after == 2.0 and not e.value.permanent
        hook.replies.append((503, {}))
        with pytest.raises(DeliveryError) as e:
            ch.send("webhook", "x")
        assert not e.value.permanent and e.value.retry_after is None
        hook.replies.append((404, {}))
        with pytest.raises(DeliveryError) as e:
            ch.send("webhook", "x")
        assert e.value.permanent and "SECRET-TOKEN" not in str(e.value)
        # through the deliverer: 502, 429 then accepted
        hook.replies += [(502, {}), (429, {"Retry-After": "0.1"})]
        d = Deliverer({"webhook": ch}, RateLimiter(0, 1000))
        d.backoff.initial_s = 0.05
        assert d.deliver("webhook", "final") == 3 and hook.got[-1]["text"] == "final"
    finally:
        ch.close()
        hook.close()
    dead = WebhookChannel("http://127.0.0.1:9/hooks/SECRET")  # nothing listens: transient network error
    try:
        with pytest.raises(DeliveryError) as e:
            dead.send("webhook", "x")
        assert not e.value.permanent and "SECRET" not in str(e.value)
    finally:
        dead.close()
