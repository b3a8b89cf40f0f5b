"""Webhook mode: only Telegram (holding the secret token) can feed updates."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from fastapi.testclient import TestClient

from tests.tgbot.conftest import OWNER
from tgbot.auth import Access
from tgbot.bot import BotCore, ControlGateway
from tgbot.service import make_bot
from tgbot.webhook import SECRET_HEADER, WEBHOOK_PATH, webhook_app


def _update(uid: int, text: str) -> dict:
    return {
        "update_id": 7,
        "message": {
            "message_id": 1,
            "date": 0,
            "text": text,
            "chat": {"id": uid, "type": "private"},
            "from": {"id": uid, "is_bot": False, "first_name": "x"},
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
        },
    }


def test_webhook_checks_the_secret_token(bot_api):
    core = BotCore(ControlGateway(bus=None), Access({OWNER: "trader"}), ThreadPoolExecutor(1))
    bot = make_bot(bot_api.token, bot_api.base_url)
    app = webhook_app(core.dispatcher(), bot, "s3cret-token")
    with TestClient(app) as client:
        for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: "s3cret-token-longer"}):
            r = client.post(WEBHOOK_PATH, json=_update(OWNER, "/help"), headers=headers)
            assert r.status_code == 403
        assert bot_api.snapshot("sendMessage") == []
        r = client.post(WEBHOOK_PATH, json=_update(OWNER, "/help"), headers={SECRET_HEADER: "s3cret-token"})
        assert r.status_code == 200
        sent = bot_api.wait_call(lambda c: c.method == "sendMessage")
        assert sent.chat_id == OWNER and "/flatten" in sent.text
        assert client.post(WEBHOOK_PATH, content=b"nope", headers={SECRET_HEADER: "s3cret-token"}).status_code == 400
    assert core.gateway.sent == 0


@pytest.mark.rabbitmq
def test_webhook_mode_service_registers_and_serves(monkeypatch, bot_api, responder, amqp_url):
    """TELEGRAM_MODE=webhook: the service registers its URL and secret with Telegram and serves
    updates on TELEGRAM_WEBHOOK_LISTEN; only requests with the secret reach the trader."""
    import json
    import socket
    import time
    import urllib.error
    import urllib.request

    from depthpilot.bus import connect_bus
    from depthpilot.settings import load_settings
    from tgbot.service import TgbotService

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "TELEGRAM_BOT_TOKEN": bot_api.token,
        "TELEGRAM_API_BASE_URL": bot_api.base_url,
        "TELEGRAM_USERS": f"{OWNER}:trader",
        "AMQP_URL": amqp_url,
        "TELEGRAM_MODE": "webhook",
        "TELEGRAM_WEBHOOK_URL": "https://bot.example.org/",
        "TELEGRAM_WEBHOOK_SECRET": "hook-secret-1",
        "TELEGRAM_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bus = connect_bus(amqp_url, "tgbot").start()
    svc = TgbotService(load_settings(), bus).start()
    try:
        hook = bot_api.wait_call(lambda c: c.method == "setWebhook")
        assert hook.params["url"] == "https://bot.example.org/telegram/webhook"
        assert hook.params["secret_token"] == "hook-secret-1"

        def post(headers: dict) -> int:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
                method="POST",
                data=json.dumps(_update(OWNER, "/status")).encode(),
                headers={"Content-Type": "application/json", **headers},
            )
            deadline = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status
                except urllib.error.HTTPError as e:
                    return e.code
                except urllib.error.URLError:  # not listening yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

        assert post({SECRET_HEADER: "wrong"}) == 403
        assert post({}) == 403
        assert responder.seen == []
        assert post({SECRET_HEADER: "hook-secret-1"}) == 200
        sent = bot_api.wait_call(lambda c: c.method == "sendMessage" and "Mode: PAPER" in c.text)
        assert sent.chat_id == OWNER and [c.command for c in responder.seen] == ["trader_status"]
        assert not any(c.method == "getUpdates" for c in bot_api.snapshot())
    finally:
        t0 = time.monotonic()
        svc.stop()
        bus.close()
        assert time.monotonic() - t0 < 10
