"""Webhook mode: only Telegram (holding the secret token) can feed updates."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from tests.tgbot.conftest import OWNER
from tgbot.auth import Access
from tgbot.bot import BotCore, ControlGateway
from tgbot.service import make_bot
from tgbot.webhook import SECRET_HEADER, WEBHOOK_PATH, webhook_app


def _update(uid: int, text: str) -> dict:
    return {"update_id": 7, "message": {"message_id": 1, "date": 0, "text": text,
                                        "chat": {"id": uid, "type": "private"},
                                        "from": {"id": uid, "is_bot": False, "first_name": "x"},
                                        "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}]}}


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
