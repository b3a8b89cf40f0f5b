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
) -> ExecutionClient:
    """An execution client for ``venue`` (``"bybit"`` -> pybit v5; any other name -> that ccxt
    exchange id, e.g. ``"binanceusdm"``). ``mode`` is ``"testnet"`` or ``"live"`` (explicit:
    there is no default); ``base_url`` overrides the venue's REST address (mirror, local fake);
    ``timeout_s`` is the per-request HTTP timeout; ``category`` the Bybit product (``linear``)."""
    if mode not in ("testnet", "live"):
        raise ValueError(f"execution mode {mode!r}: live adapters take 'testnet' or 'live' (paper is the paper exchange)")
    key, secret = _reveal(api_key, "an API key"), _reveal(api_secret, "an API secret")
    if venue == "bybit":
        from trader.execution.bybit_v5 import BybitExecution

        return BybitExecution(api_key=key, api_secret=secret, mode=mode, base_url=base_url, timeout_s=timeout_s,
                              recv_window_ms=recv_window_ms, category=category, retry=retry)
    from trader.execution.ccxt_exec import CcxtExecution

    return CcxtExecution(venue=venue, api_key=key, api_secret=secret, mode=mode, base_url=base_url,
                         timeout_s=timeout_s, recv_window_ms=recv_window_ms, retry=retry, options=ccxt_options)


__all__ = ["RetryPolicy", "make_execution_client"]
