"""Webhook mode (optional): a FastAPI route Telegram POSTs updates to.

Telegram sends the secret given to ``setWebhook`` in ``X-Telegram-Bot-Api-Secret-Token``; a
request without the right one is refused (403) and never reaches the dispatcher. Mount
:func:`webhook_router` in another FastAPI app, or run :func:`webhook_app` on its own.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request

log = logging.getLogger("tgbot.webhook")

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_router(dp: Dispatcher, bot: Bot, secret: str, path: str = WEBHOOK_PATH) -> APIRouter:
    if not secret:
        raise ValueError("TELEGRAM_WEBHOOK_SECRET is required in webhook mode")
    router = APIRouter()

    @router.post(path)
    async def telegram_webhook(
        request: Request, token: str | None = Header(None, alias=SECRET_HEADER)
    ) -> dict[str, Any]:
        if token is None or not hmac.compare_digest(token.encode(), secret.encode()):
            log.warning(
                "webhook call without the right secret token from %s: refused",
                request.client.host if request.client else "?",
            )
            raise HTTPException(status_code=403, detail="forbidden")
        try:
            update = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="body is not JSON") from None
        await dp.feed_webhook_update(bot, update)
        return {"ok": True}

    return router


def webhook_app(dp: Dispatcher, bot: Bot, secret: str, path: str = WEBHOOK_PATH) -> FastAPI:
    app = FastAPI(title="depthpilot telegram webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(webhook_router(dp, bot, secret, path))
    return app
