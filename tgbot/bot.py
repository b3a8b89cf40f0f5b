"""aiogram wiring: chat messages and button taps -> one typed control request each.

The handlers never block the event loop: :class:`ControlGateway` (sync, over ``bus.rpc``) runs
in a thread pool. Authorisation happens before anything reaches the bus; refusals are logged
with user and chat ids, never with message content.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from depthpilot import control as c
from depthpilot.redact import mask_secrets
from tgbot import render
from tgbot.auth import Access, looks_like_secret
from tgbot.commands import COMMANDS, Parsed, describe, help_text, parse
from tgbot.confirm import Confirmations

log = logging.getLogger("tgbot")

MAX_TEXT = 4000  # Telegram's limit is 4096
QUICK = ("status", "positions", "pnl", "balance", "trades", "risk")
SECRET_REFUSAL = (
    "That looked like an API key or secret, so it was deleted (where I could) and ignored. "
    "Never send keys in chat: they belong in the server's environment (.env)."
)


class ControlGateway:
    """Sync: one ControlClient call per request, tagged ``telegram:<user id>``."""

    def __init__(self, bus: Any, timeout_s: float = 5.0) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self.sent = 0

    def call(self, user_id: int, req: c.Request) -> c.Reply:
        self.sent += 1
        return c.ControlClient(self.bus, requested_by=f"telegram:{user_id}", timeout_s=self.timeout_s).call(req)


@dataclass
class BotStats:
    commands: int = 0
    refused: int = 0
    secrets_deleted: int = 0
    timeouts: int = 0
    confirmations_expired: int = 0

    def as_dict(self) -> dict[str, float]:
        return {f"tg_{k}": float(v) for k, v in self.__dict__.items()}


@dataclass
class BotCore:
    gateway: ControlGateway
    access: Access
    executor: Executor
    mode: str = "paper"
    confirmations: Confirmations = field(default_factory=Confirmations)
    stats: BotStats = field(default_factory=BotStats)

    # ------------------------------------------------------------------ wiring
    def router(self) -> Router:
        r = Router(name="depthpilot")
        r.message.register(self.on_message)
        r.edited_message.register(self.on_edited)
        r.callback_query.register(self.on_callback, F.data)
        return r

    def dispatcher(self) -> Dispatcher:
        dp = Dispatcher()
        dp.include_router(self.router())
        dp.startup.register(self.on_startup)
        return dp

    async def on_startup(self, bot: Bot) -> None:
        try:
            await bot.set_my_commands([BotCommand(command=n, description=w[:256]) for n, _, w in COMMANDS])
        except TelegramAPIError as exc:  # cosmetic: the menu; the commands work without it
            log.warning("could not set the bot's command menu: %s", exc)

    # ------------------------------------------------------------------ running requests
    async def run(self, user_id: int, req: c.Request) -> str:
        self.stats.commands += 1
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(self.executor, self.gateway.call, user_id, req)
        except c.ControlTimeout:
            self.stats.timeouts += 1
            return render.render_timeout(req, self.gateway.timeout_s)
        except c.ControlRejected as exc:
            return render.render_rejected(exc)
        except Exception as exc:  # noqa: BLE001 - the user gets one line; the log gets the trace
            log.exception("control request %s failed", req.COMMAND)
            return mask_secrets(f"Error: {type(exc).__name__}: {exc}")  # the log is masked; the chat too
        return render.render(reply)[:MAX_TEXT]

    def _refuse(self, user_id: int | None, chat_id: int, what: str, reason: str) -> str:
        self.stats.refused += 1
        log.warning("refused %s from user %s in chat %s: %s", what, user_id, chat_id, reason)
        return f"Refused: {reason}."

    # ------------------------------------------------------------------ messages
    async def on_message(self, message: Message, bot: Bot) -> None:
        text = message.text or message.caption or ""
        uid = message.from_user.id if message.from_user else None
        chat = message.chat
        if looks_like_secret(text):
            self.stats.secrets_deleted += 1
            log.warning("message from user %s in chat %s looked like a credential: deleted, not logged", uid, chat.id)
            try:
                await message.delete()
            except TelegramAPIError as exc:
                log.warning("could not delete it (%s): ask an admin to delete it", type(exc).__name__)
            await message.answer(SECRET_REFUSAL)
            return
        me = await bot.me()
        parsed = parse(text, chat_id=chat.id, mode=self.mode, bot_username=me.username or "")
        if parsed is None:
            return
        await self.handle(parsed, uid, chat.id, chat.type, message.answer)

    async def on_edited(self, message: Message, bot: Bot) -> None:
        """An edited message is never (re-)executed, but a key pasted into an edit is removed too."""
        if looks_like_secret(message.text or message.caption or ""):
            await self.on_message(message, bot)

    async def handle(
        self, parsed: Parsed, uid: int | None, chat_id: int, chat_type: str, answer: Callable[..., Awaitable[Any]]
    ) -> None:
        decision = self.access.check(uid, chat_id, chat_type, parsed.needs)
        if not decision.ok:
            await answer(self._refuse(uid, chat_id, f"/{parsed.name}", decision.reason))
            return
        assert uid is not None
        if parsed.error:
            await answer(parsed.error)
            return
        if parsed.local == "help":
            await answer(help_text(self.mode), reply_markup=self.quick_keyboard())
            return
        assert parsed.request is not None
        if parsed.confirm:
            p = self.confirmations.add(uid, chat_id, parsed.request)
            await answer(self.confirm_text(parsed), reply_markup=self.confirm_keyboard(parsed, p.token))
            return
        await answer(await self.run(uid, parsed.request))

    def confirm_text(self, parsed: Parsed) -> str:
        ttl = f"{self.confirmations.ttl_s:g}"
        req = parsed.request
        assert req is not None
        if parsed.confirm == "stop" and isinstance(req, c.StopTrading):  # commands.parse: always one
            return (
                f"Stop trading {req.symbol}. Also flatten (close) the open positions at market?  [expires in {ttl} s]"
            )
        extra = f" in {self.mode.upper()} mode (real money)" if isinstance(req, c.StartTrading) else ""
        return f"Confirm: {describe(req)}{extra}?  [expires in {ttl} s]"

    @staticmethod
    def confirm_keyboard(parsed: Parsed, token: str) -> InlineKeyboardMarkup:
        if parsed.confirm == "stop":
            row = [
                InlineKeyboardButton(text="Stop and flatten", callback_data=f"cf:{token}"),
                InlineKeyboardButton(text="Stop, keep positions", callback_data=f"ck:{token}"),
            ]
        else:
            row = [InlineKeyboardButton(text="Yes, do it", callback_data=f"cf:{token}")]
        return InlineKeyboardMarkup(
            inline_keyboard=[row, [InlineKeyboardButton(text="Cancel", callback_data=f"cx:{token}")]]
        )

    @staticmethod
    def quick_keyboard() -> InlineKeyboardMarkup:
        btn = [InlineKeyboardButton(text=q.capitalize(), callback_data=f"q:{q}") for q in QUICK]
        return InlineKeyboardMarkup(inline_keyboard=[btn[:3], btn[3:]])

    # ------------------------------------------------------------------ buttons
    async def on_callback(self, query: CallbackQuery, bot: Bot) -> None:
        data = query.data or ""
        uid = query.from_user.id
        msg = query.message
        if msg is None or not isinstance(msg, Message):
            await query.answer("This button is too old.")
            return
        chat = msg.chat
        kind, _, arg = data.partition(":")
        if kind == "q":
            if arg not in QUICK:
                await query.answer("Unknown button.")
                return
            await query.answer()
            parsed = parse(f"/{arg}", chat_id=chat.id, mode=self.mode)
            assert parsed is not None
            await self.handle(parsed, uid, chat.id, chat.type, msg.answer)
            return
        if kind == "cx":
            done = self.confirmations.cancel(arg, uid)
            await query.answer("Cancelled." if done else "Nothing to cancel.")
            if done:
                await msg.edit_text("Cancelled: nothing was done.")
            return
        if kind not in ("cf", "ck"):
            await query.answer("Unknown button.")
            return
        outcome, pending = self.confirmations.take(arg, uid)
        if outcome == "unknown":
            await query.answer("Unknown or already used confirmation.", show_alert=True)
            return
        if outcome == "wrong_user":
            await query.answer(
                self._refuse(uid, chat.id, "a confirmation", "only the user who asked can confirm"), show_alert=True
            )
            return
        if outcome == "expired":
            self.stats.confirmations_expired += 1
            await query.answer("Expired: nothing was done.", show_alert=True)
            await msg.edit_text("Expired: nothing was done. Send the command again.")
            return
        assert pending is not None
        req: c.Request = pending.action
        if isinstance(req, c.StopTrading):
            req = c.StopTrading(symbol=req.symbol, flatten=kind == "cf")
        decision = self.access.check(uid, chat.id, chat.type, req.ROLE)  # the allow-list may have changed
        if not decision.ok:
            await query.answer(self._refuse(uid, chat.id, req.COMMAND, decision.reason), show_alert=True)
            return
        await query.answer("Running...")
        await msg.edit_text(f"Running: {describe(req)}...")
        await msg.answer(await self.run(uid, req))
