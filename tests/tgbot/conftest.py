from __future__ import annotations

import time
from typing import Iterator

import pytest

from tests.tgbot.fakes.bot_api import FakeBotAPI
from tests.tgbot.fakes.responder import PaperResponder

OWNER, VIEWER, STRANGER = 1001, 1002, 6666
GROUP, OTHER_GROUP = -100777, -100888


@pytest.fixture
def bot_api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
def clean_control(amqp_url: str) -> str:
    from depthpilot.bus import connect_bus
    from depthpilot.topology import control_queue

    bus = connect_bus(amqp_url, "test-admin").start()
    try:
        for svc in ("trader", "notifier"):
            bus.purge(control_queue(svc))
    finally:
        bus.close()
    return amqp_url


@pytest.fixture
def responder(clean_control: str) -> Iterator[PaperResponder]:
    r = PaperResponder(clean_control).run()
    yield r
    r.close()


def start_bot(monkeypatch: pytest.MonkeyPatch, api: FakeBotAPI, amqp_url: str, **env: str):
    from depthpilot.bus import connect_bus
    from depthpilot.settings import load_settings
    from tgbot.service import TgbotService

    base = {
        "TELEGRAM_BOT_TOKEN": api.token,
        "TELEGRAM_API_BASE_URL": api.base_url,
        "TELEGRAM_USERS": f"{OWNER}:trader,{VIEWER}:viewer",
        "TELEGRAM_ALLOWED_CHAT_IDS": str(GROUP),
        "TELEGRAM_POLL_TIMEOUT_S": "1",
        "TELEGRAM_CONTROL_TIMEOUT_S": "3",
        "AMQP_URL": amqp_url,
    }
    base.update(env)
    for k, v in base.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    bus = connect_bus(amqp_url, "tgbot").start()
    svc = TgbotService(settings, bus).start()
    api.wait_call(lambda c: c.method == "getUpdates", timeout=10)
    return svc


def stop_bot(svc) -> None:
    t0 = time.monotonic()
    svc.stop()
    svc.bus.close()
    assert time.monotonic() - t0 < 10
