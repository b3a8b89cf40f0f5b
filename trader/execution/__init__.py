"""Live execution adapters (Bybit v5 via pybit, any ccxt venue - Binance USD-M by default)
behind the :class:`trader.domain.ExecutionClient` interface, and the one factory the trader
service calls: :func:`make_execution_client`.

The clients are synchronous (blocking HTTP with retries inside); call them from a worker
thread. Paper trading is not here (``mode="paper"`` is refused): it is the paper exchange.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from trader.domain import ExecutionClient, Mode
from trader.execution.common import RetryPolicy


def _reveal(x: SecretStr | str | None, name: str) -> str:
    value = x.get_secret_value() if isinstance(x, SecretStr) else (x or "")
    if not value:
        raise ValueError(f"live execution needs {name} (mode testnet/live without keys)")
    return value


def make_execution_client(
    *,
    venue: str,
    mode: Mode,
    api_key: SecretStr | str | None,
    api_secret: SecretStr | str | None,
    base_url: str | None = None,
    timeout_s: float = 10.0,
    category: str = "linear",
    recv_window_ms: int = 5000,
    retry: RetryPolicy | None = None,
    ccxt_options: dict[str, Any] | None = None,
    private_stream: bool = True,
    private_ws_url: str | None = None,
    ws_reconnect_s: float = 5.0,
) -> ExecutionClient:
    """An execution client for ``venue`` (``"bybit"`` -> pybit v5; any other name -> that ccxt
    exchange id, e.g. ``"binanceusdm"``). ``mode`` is ``"testnet"`` or ``"live"`` (explicit:
    there is no default); ``base_url`` overrides the venue's REST address (mirror, local fake);
    ``timeout_s`` is the per-request HTTP timeout; ``category`` the Bybit product (``linear``).
    Bybit's private WebSocket feeds ``poll_events`` when ``private_stream`` is on: at
    ``private_ws_url``, or Bybit's own stream for ``mode`` when no ``base_url`` is set (with a
    ``base_url`` and no ``private_ws_url`` events come from REST polling only)."""
    if mode not in ("testnet", "live"):
        raise ValueError(
            f"execution mode {mode!r}: live adapters take 'testnet' or 'live' (paper is the paper exchange)"
        )
    key, secret = _reveal(api_key, "an API key"), _reveal(api_secret, "an API secret")
    if venue == "bybit":
        from trader.execution.bybit_stream import MAINNET_URL, TESTNET_URL
        from trader.execution.bybit_v5 import BybitExecution

        ws_url = private_ws_url or (None if base_url else (TESTNET_URL if mode == "testnet" else MAINNET_URL))
        return BybitExecution(
            api_key=key,
            api_secret=secret,
            mode=mode,
            base_url=base_url,
            timeout_s=timeout_s,
            recv_window_ms=recv_window_ms,
            category=category,
            retry=retry,
            private_ws_url=ws_url if private_stream else None,
            ws_reconnect_s=ws_reconnect_s,
        )
    from trader.execution.ccxt_exec import CcxtExecution

    return CcxtExecution(
        venue=venue,
        api_key=key,
        api_secret=secret,
        mode=mode,
        base_url=base_url,
        timeout_s=timeout_s,
        recv_window_ms=recv_window_ms,
        retry=retry,
        options=ccxt_options,
    )


__all__ = ["RetryPolicy", "make_execution_client"]
