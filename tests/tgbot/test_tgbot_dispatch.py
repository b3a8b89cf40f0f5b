"""Dispatcher behaviour without a broker: updates fed to the real aiogram dispatcher, replies
sent to the local Bot API server; the gateway has no bus, so any control call would fail."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from tests.tgbot.conftest import OWNER, STRANGER
from tgbot.auth import Access
from tgbot.bot import BotCore, ControlGateway
from tgbot.service import make_bot


def _msg(uid: int, text: str, mid: int = 1) -> dict:
    return {
        "message_id": mid,
        "date": 0,
        "text": text,
        "chat": {"id": uid, "type": "private"},
        "from": {"id": uid, "is_bot": False, "first_name": "x"},
    }


def test_edits_are_never_executed_but_keys_in_edits_are_deleted(bot_api):
    core = BotCore(ControlGateway(bus=None), Access({OWNER: "trader"}), ThreadPoolExecutor(1))
    dp = core.dispatcher()

    async def run() -> None:
        bot = make_bot(bot_api.token, bot_api.base_url)
        try:
            await dp.feed_webhook_update(
                bot, {"update_id": 1, "edited_message": {**_msg(OWNER, "/flatten"), "edit_date": 1}}
            )
            await dp.feed_webhook_update(
                bot,
                {
                    "update_id": 2,
                    "edited_message": {**_msg(OWNER, "oops api_secret=Zx81kq7Lm2Pq9Rt4Vw6", mid=5), "edit_date": 1},
                },
            )
            await dp.feed_webhook_update(bot, {"update_id": 3, "message": _msg(STRANGER, "hello")})
            await dp.feed_webhook_update(bot, {"update_id": 4, "message": _msg(OWNER, "/trades 0")})
        finally:
            await bot.session.close()

    asyncio.run(run())
    sent = bot_api.snapshot("sendMessage")
    assert [c.text for c in sent][0].startswith("That looked like an API key")
    assert bot_api.deleted == [(OWNER, 5)]
    assert sent[1].text == "/trades: n must be between 1 and 50, got 0"
    assert len(sent) == 2  # the edited /flatten and the stranger's plain text got no answer
    assert core.gateway.sent == 0


def test_an_unexpected_error_reaches_the_chat_as_one_line_with_secrets_masked():
    """The log is masked by the services' SecretFilter; the chat reply goes through the same
    registered secrets, so an error text quoting a key never reaches Telegram."""
    from depthpilot import control as c
    from depthpilot.redact import register_secrets

    token = "1234" + "56789:" + "TESTONLY-not-a-real-bot-token"  # built at run time: scanners skip it
    register_secrets([token])

    class Failing(ControlGateway):
        def call(self, user_id, req):
            raise RuntimeError(f"could not reach the bus with {token}")

    core = BotCore(Failing(bus=None), Access({OWNER: "trader"}), ThreadPoolExecutor(1))
    text = asyncio.run(core.run(OWNER, c.Positions()))
    assert text == "Error: RuntimeError: could not reach the bus with ***"
    assert token not in text and "\n" not in text
