"""The tgbot service wiring: the aiogram bot (long polling, or a webhook served by uvicorn) on
its own event-loop thread; control requests go over the bus through :class:`ControlGateway`
in a thread pool. Without ``TELEGRAM_BOT_TOKEN`` the service idles and says so in its status."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from typing import TYPE_CHECKING

from depthpilot import messages as m
from depthpilot.service import Service
from tgbot.auth import Access, parse_users
from tgbot.confirm import Confirmations

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger("tgbot")


def make_bot(token: str, api_base_url: str | None) -> "Bot":
    from aiogram import Bot  # aiogram is slow to import: only when the bot runs
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base_url)) if api_base_url else None
    return Bot(token=token, session=session)


class TgbotService(Service):
    name = "tgbot"

    def setup(self) -> None:
        s = self.settings
        self.access = Access(parse_users(s.telegram_users), frozenset(s.telegram_allowed_chat_ids))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dp: Any = None
        self._server: Any = None
        self.core: Any = None
        self.disabled = ""
        if s.telegram_bot_token is None or not s.telegram_bot_token.get_secret_value():
            self.disabled = "TELEGRAM_BOT_TOKEN is not set: the bot is off"
            log.warning("%s", self.disabled)
            return
        self._bot_token = s.telegram_bot_token  # a SecretStr, checked set above
        from tgbot.bot import BotCore, ControlGateway

        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tgbot-control")
        self.gateway = ControlGateway(self.bus, timeout_s=s.telegram_control_timeout_s)
        self.core = BotCore(
            self.gateway,
            self.access,
            self._executor,
            mode=s.mode.value,
            confirmations=Confirmations(ttl_s=s.telegram_confirm_ttl_s),
        )
        if not self.access.users:
            log.warning("TELEGRAM_USERS is empty: the bot will refuse everyone")
        if any(cid > 0 for cid in s.telegram_allowed_chat_ids):
            log.warning(
                "TELEGRAM_ALLOWED_CHAT_IDS lists positive (private) chat ids: private chats need no entry; "
                "list the users in TELEGRAM_USERS"
            )
        self._ready = threading.Event()
        self._bot_thread = self.spawn(self._run_bot, "bot")
        self._ready.wait(10)

    def _run_bot(self) -> None:
        s = self.settings
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        bot = make_bot(self._bot_token.get_secret_value(), s.telegram_api_base_url)
        self._dp = self.core.dispatcher()
        try:
            if s.telegram_mode == "webhook":
                loop.run_until_complete(self._serve_webhook(bot))
            else:
                self._ready.set()
                loop.run_until_complete(
                    self._dp.start_polling(bot, handle_signals=False, polling_timeout=s.telegram_poll_timeout_s)
                )
        except Exception:  # noqa: BLE001 - reported through the status below
            log.exception("telegram bot stopped with an error")
        finally:
            self._ready.set()
            pending = asyncio.all_tasks(loop)  # e.g. stop_polling() waiting for its signal
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            if not self.stopping.is_set():
                self.status = "degraded"  # the bot is gone: health must not say ok

    async def _serve_webhook(self, bot: "Bot") -> None:
        import uvicorn

        from tgbot.webhook import WEBHOOK_PATH, webhook_app

        s = self.settings
        secret = s.telegram_webhook_secret.get_secret_value() if s.telegram_webhook_secret else ""
        if not s.telegram_webhook_url:
            raise ValueError("TELEGRAM_WEBHOOK_URL is required when TELEGRAM_MODE=webhook")
        app = webhook_app(self._dp, bot, secret)
        host, port = s.telegram_webhook_listen.rsplit(":", 1)
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning"))
        await self.core.on_startup(bot)
        await bot.set_webhook(s.telegram_webhook_url.rstrip("/") + WEBHOOK_PATH, secret_token=secret)
        self._ready.set()
        try:
            await self._server.serve()
        finally:
            await bot.session.close()

    def teardown(self) -> None:
        if self.core is None:
            return
        loop = self._loop
        if loop is not None and loop.is_running():
            if self._server is not None:
                self._server.should_exit = True
            elif self._dp is not None:
                asyncio.run_coroutine_threadsafe(self._dp.stop_polling(), loop)
            self._bot_thread.join(10)
            if self._bot_thread.is_alive():
                log.warning("the telegram bot thread did not stop within 10 s")
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, float]:
        if getattr(self, "core", None) is None:
            return {}
        out = self.core.stats.as_dict()
        out["tg_pending_confirmations"] = float(len(self.core.confirmations))
        return out

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command == "status":
            return {"telegram": self.disabled or f"{self.settings.telegram_mode}, {len(self.access.users)} users"}
        return None


SERVICE = TgbotService
