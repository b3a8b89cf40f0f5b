"""Settings from the environment and ``.env`` (pydantic-settings).

An invalid or missing required value stops start-up with ONE line naming the variable
(:func:`load_settings` raises :class:`ConfigError`; services print it and exit 2).
Secrets are ``SecretStr``: never printed, never logged, masked in ``repr`` and
``safe_dict()``.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any
from urllib.parse import urlsplit

from depthpilot.redact import redact_url  # noqa: F401 - re-exported
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(RuntimeError):
    """A configuration value is missing or invalid. ``str()`` is one line naming the variable."""


class Mode(str, Enum):
    PAPER = "paper"
    TESTNET = "testnet"
    LIVE = "live"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # infrastructure
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2F", validation_alias="AMQP_URL")
    mongo_url: str = Field("mongomock://", validation_alias="MONGO_URL")
    mongo_db: str = Field("depthpilot", validation_alias="MONGO_DB")
    amqp_heartbeat_s: int = Field(30, ge=0, le=600, validation_alias="AMQP_HEARTBEAT_S")
    amqp_prefetch: int = Field(200, ge=1, le=65535, validation_alias="AMQP_PREFETCH")
    market_queue_max_length: int = Field(10_000, ge=10, validation_alias="MARKET_QUEUE_MAX_LENGTH")

    # what to trade / collect
    mode: Mode = Field(Mode.PAPER, validation_alias=AliasChoices("DEPTHPILOT_MODE", "MODE"))
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTCUSDT"], validation_alias="DEPTHPILOT_SYMBOLS"
    )
    exchanges: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["binance"], validation_alias="DEPTHPILOT_EXCHANGES"
    )
    data_dir: str | None = Field(None, validation_alias="DEPTHPILOT_DATA_DIR")
    # backtest catalogue of rebuilt books (default: $XDG_CACHE_HOME/depthpilot or ~/.cache/depthpilot)
    cache_dir: str | None = Field(None, validation_alias="DEPTHPILOT_CACHE_DIR")
    book_depth: int = Field(250, ge=1, le=5000, validation_alias="BOOK_DEPTH")
    snapshot_rate_hz: float = Field(10.0, gt=0, le=1000, validation_alias="SNAPSHOT_RATE_HZ")
    snapshot_store_interval_s: float = Field(1.0, gt=0, validation_alias="SNAPSHOT_STORE_INTERVAL_S")
    snapshot_ttl_s: int = Field(7 * 86400, ge=60, validation_alias="SNAPSHOT_TTL_S")
    book_max_staleness_s: float = Field(5.0, gt=0, validation_alias="BOOK_MAX_STALENESS_S")

    # collector service
    collector_source: str = Field("live", pattern="^(live|replay)$", validation_alias="COLLECTOR_SOURCE")
    collector_ccxt_mode: str = Field("auto", pattern="^(auto|ws|rest)$", validation_alias="COLLECTOR_CCXT_MODE")
    # live trades next to the books (every live source: native Binance, pybit, ccxt)
    collector_trades: bool = Field(True, validation_alias="COLLECTOR_TRADES")
    # ccxt sources: base URL (scheme://host[:port]) replacing every REST API host, paths kept
    # (a private mirror, a proxy or a local fake exchange); None = the exchanges' own
    ccxt_api_base_url: str | None = Field(None, validation_alias="CCXT_API_BASE_URL")
    # ccxt.pro websocket host (scheme://host:port; paths kept), e.g. a proxy or a local test server
    ccxt_ws_base_url: str | None = Field(None, validation_alias="CCXT_WS_BASE_URL")
    replay_paths: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="REPLAY_PATHS")
    replay_speed: float = Field(1.0, ge=0, validation_alias="REPLAY_SPEED")  # 0 = as fast as possible
    replay_loop: bool = Field(False, validation_alias="REPLAY_LOOP")
    # native Binance diff-depth source: base-URL overrides (None = the real endpoints), e.g. a
    # proxy, a mirror or a local fake exchange; scheme://host[:port], paths are added
    binance_ws_url: str | None = Field(None, validation_alias="BINANCE_WS_URL")
    binance_rest_url: str | None = Field(None, validation_alias="BINANCE_REST_URL")
    binance_usdm_ws_url: str | None = Field(None, validation_alias="BINANCE_USDM_WS_URL")
    binance_usdm_rest_url: str | None = Field(None, validation_alias="BINANCE_USDM_REST_URL")
    # channel names after "<symbol>@" (default: depth@100ms and trade on spot, depth@100ms and aggTrade on USD-M)
    binance_depth_stream: str | None = Field(None, validation_alias="BINANCE_DEPTH_STREAM")
    binance_trade_stream: str | None = Field(None, validation_alias="BINANCE_TRADE_STREAM")
    collector_reconnect_initial_s: float = Field(1.0, gt=0, le=60, validation_alias="COLLECTOR_RECONNECT_INITIAL_S")
    # a live feed without a usable message (valid book / trade) for this long makes the collector unhealthy
    collector_feed_down_limit_s: float = Field(60.0, gt=0, validation_alias="COLLECTOR_FEED_DOWN_LIMIT_S")
    binance_coinm_ws_url: str | None = Field(None, validation_alias="BINANCE_COINM_WS_URL")
    binance_coinm_rest_url: str | None = Field(None, validation_alias="BINANCE_COINM_REST_URL")
    # Bybit public websocket URL override (a proxy or a local fake); None = pybit's endpoint
    bybit_ws_url: str | None = Field(None, validation_alias="BYBIT_WS_URL")
    # Kraken spot native book feed (exchange name krakenspot; symbols as Kraken writes them: BTC/USD in v2)
    kraken_spot_ws_url: str | None = Field(None, validation_alias="KRAKEN_SPOT_WS_URL")
    kraken_spot_ws_version: int = Field(2, ge=1, le=2, validation_alias="KRAKEN_SPOT_WS_VERSION")
    # record every raw live message into rotating gzip day files under this directory (replay format)
    collector_record_dir: str | None = Field(None, validation_alias="COLLECTOR_RECORD_DIR")
    collector_record_flush_s: float = Field(1.0, gt=0, le=60, validation_alias="COLLECTOR_RECORD_FLUSH_S")
    collector_record_rotate_mb: float = Field(0.0, ge=0, validation_alias="COLLECTOR_RECORD_ROTATE_MB")  # 0: daily only

    # features service
    features_spec_file: str | None = Field(None, validation_alias="FEATURES_SPEC_FILE")
    features_emit: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["snapshot", "block", "candle"], validation_alias="FEATURES_EMIT"
    )
    features_candles_from: str = Field("trades", pattern="^(trades|mid)$", validation_alias="FEATURES_CANDLES_FROM")
    features_store: bool = Field(True, validation_alias="FEATURES_STORE")
    # start-up back-fill of candle state: the exchange's REST history (ccxt; CCXT_API_BASE_URL applies)
    # or the trades the collector stored
    features_backfill: str = Field("off", pattern="^(off|rest|store)$", validation_alias="FEATURES_BACKFILL")
    features_backfill_candles: int = Field(300, ge=1, le=5000, validation_alias="FEATURES_BACKFILL_CANDLES")
    # input freshness (features and predictor): live inputs are judged by the wall clock,
    # replayed ones by the replay clock (auto: replay when COLLECTOR_SOURCE=replay)
    pipeline_clock: str = Field("auto", pattern="^(auto|wall|replay)$", validation_alias="PIPELINE_CLOCK")
    input_future_tolerance_s: float = Field(5.0, gt=0, validation_alias="INPUT_FUTURE_TOLERANCE_S")
    input_max_age_s: float = Field(10.0, ge=0, validation_alias="INPUT_MAX_AGE_S")  # 0 = no age limit

    # predictor service
    predictor_model: str = Field(
        "book-default", validation_alias="PREDICTOR_MODEL"
    )  # name under predictor/models or a path
    predictor_threads: int = Field(1, ge=1, le=64, validation_alias="PREDICTOR_THREADS")
    # a symbol receiving vectors without a signal for this long degrades the status (0 = auto:
    # the model's window length in seconds + 30 s)
    predictor_silence_s: float = Field(0.0, ge=0, validation_alias="PREDICTOR_SILENCE_S")

    # risk limits
    risk_max_position_usd: float = Field(1_000.0, gt=0, validation_alias="RISK_MAX_POSITION_USD")
    risk_max_daily_loss_usd: float = Field(100.0, gt=0, validation_alias="RISK_MAX_DAILY_LOSS_USD")
    risk_max_leverage: float = Field(3.0, gt=0, le=100, validation_alias="RISK_MAX_LEVERAGE")
    risk_max_open_orders: int = Field(4, ge=1, validation_alias="RISK_MAX_OPEN_ORDERS")

    # trader service (strategy / risk / execution; money is exact: Decimal from text)
    trader_exchange: str = Field("", validation_alias="TRADER_EXCHANGE")  # "" = first of DEPTHPILOT_EXCHANGES
    # testnet/live adapter: "bybit" (pybit v5) or a ccxt exchange id such as "binanceusdm"
    trader_venue: str = Field("bybit", pattern="^[a-z][a-z0-9_]*$", validation_alias="TRADER_VENUE")
    trader_autostart: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="TRADER_AUTOSTART")
    trader_budget: Decimal = Field(Decimal("100"), gt=0, validation_alias="TRADER_BUDGET")
    trader_leverage: Decimal = Field(Decimal("3"), gt=0, le=100, validation_alias="TRADER_LEVERAGE")
    trader_entry_threshold: float = Field(0.55, gt=0, le=1, validation_alias="TRADER_ENTRY_THRESHOLD")
    trader_confirm_k: int = Field(2, ge=1, le=100, validation_alias="TRADER_CONFIRM_K")
    trader_smoothing_alpha: float = Field(1.0, gt=0, le=1, validation_alias="TRADER_SMOOTHING_ALPHA")
    trader_exit_on_neutral: bool = Field(False, validation_alias="TRADER_EXIT_ON_NEUTRAL")
    trader_stop_cooldown_s: float = Field(300.0, ge=0, validation_alias="TRADER_STOP_COOLDOWN_S")
    trader_max_loss_fraction: Decimal = Field(Decimal("0.5"), gt=0, le=1, validation_alias="TRADER_MAX_LOSS_FRACTION")
    trader_trailing_activation: Decimal = Field(Decimal("0.002"), ge=0, validation_alias="TRADER_TRAILING_ACTIVATION")
    trader_trailing_lock: Decimal = Field(Decimal("0.5"), gt=0, le=1, validation_alias="TRADER_TRAILING_LOCK")
    trader_max_order_notional: Decimal = Field(Decimal("1000"), gt=0, validation_alias="TRADER_MAX_ORDER_NOTIONAL")
    trader_max_total_exposure: Decimal = Field(Decimal("2000"), gt=0, validation_alias="TRADER_MAX_TOTAL_EXPOSURE")
    trader_max_signal_age_s: float = Field(60.0, gt=0, validation_alias="TRADER_MAX_SIGNAL_AGE_S")
    trader_taker_fee: Decimal = Field(Decimal("0.00055"), ge=0, lt=1, validation_alias="TRADER_TAKER_FEE")
    trader_maker_fee: Decimal = Field(Decimal("0.0002"), gt=-1, lt=1, validation_alias="TRADER_MAKER_FEE")
    trader_paper_latency_ms: float = Field(0.0, ge=0, validation_alias="TRADER_PAPER_LATENCY_MS")
    trader_paper_tick: Decimal = Field(Decimal("0.1"), gt=0, validation_alias="TRADER_PAPER_TICK")
    trader_paper_lot: Decimal = Field(Decimal("0.001"), gt=0, validation_alias="TRADER_PAPER_LOT")
    trader_paper_balance: Decimal = Field(Decimal("10000"), gt=0, validation_alias="TRADER_PAPER_BALANCE")
    trader_poll_interval_s: float = Field(0.05, gt=0, le=10, validation_alias="TRADER_POLL_INTERVAL_S")
    # replay clock: a book waits at most this long (wall) for the signal that comes before it
    trader_replay_hold_s: float = Field(1.0, gt=0, le=60, validation_alias="TRADER_REPLAY_HOLD_S")
    # the engine snapshot is saved at most this often (ms); position opens/closes, stop moves,
    # halts, control commands and shutdown save it at once (trader.runtime_ops)
    trader_snapshot_interval_ms: int = Field(1000, ge=10, le=60_000, validation_alias="TRADER_SNAPSHOT_INTERVAL_MS")
    bybit_base_url: str | None = Field(None, validation_alias="BYBIT_BASE_URL")  # a mirror / local fake venue
    bybit_private_ws_url: str | None = Field(None, validation_alias="BYBIT_PRIVATE_WS_URL")

    # telegram
    telegram_bot_token: SecretStr | None = Field(None, validation_alias="TELEGRAM_BOT_TOKEN")
    telegram_allowed_chat_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, validation_alias="TELEGRAM_ALLOWED_CHAT_IDS"
    )
    # who may command the bot: "123:trader,456:viewer" (no role = trader); TELEGRAM_ALLOWED_CHAT_IDS
    # lists the groups where those users may command it (private chats are always allowed)
    telegram_users: str = Field("", validation_alias="TELEGRAM_USERS")
    telegram_api_base_url: str | None = Field(None, validation_alias="TELEGRAM_API_BASE_URL")  # local Bot API server
    telegram_mode: str = Field("polling", pattern="^(polling|webhook)$", validation_alias="TELEGRAM_MODE")
    telegram_poll_timeout_s: int = Field(30, ge=1, le=60, validation_alias="TELEGRAM_POLL_TIMEOUT_S")
    telegram_webhook_url: str | None = Field(None, validation_alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: SecretStr | None = Field(None, validation_alias="TELEGRAM_WEBHOOK_SECRET")
    telegram_webhook_listen: str = Field(
        "127.0.0.1:8081", pattern=r"^[^:]+:\d+$", validation_alias="TELEGRAM_WEBHOOK_LISTEN"
    )
    telegram_control_timeout_s: float = Field(5.0, gt=0, le=120, validation_alias="TELEGRAM_CONTROL_TIMEOUT_S")
    telegram_confirm_ttl_s: float = Field(30.0, gt=0, le=600, validation_alias="TELEGRAM_CONFIRM_TTL_S")

    # notifier: "BTCUSDT:-100123,*:456" (symbol -> Telegram chat id or "webhook"); empty = every
    # TELEGRAM_USERS user in private
    notify_routes: str = Field("", validation_alias="NOTIFY_ROUTES")
    notify_webhook_url: SecretStr | None = Field(None, validation_alias="NOTIFY_WEBHOOK_URL")  # Discord/Slack-style
    notify_daily_summary_utc: str = Field(
        "23:55", pattern=r"^(|([01]\d|2[0-3]):[0-5]\d)$", validation_alias="NOTIFY_DAILY_SUMMARY_UTC"
    )  # "" = off
    notify_per_chat_interval_s: float = Field(1.0, ge=0, le=60, validation_alias="NOTIFY_PER_CHAT_INTERVAL_S")
    notify_global_rate_per_s: float = Field(30.0, gt=0, le=1000, validation_alias="NOTIFY_GLOBAL_RATE_PER_S")
    notify_retry_max_s: float = Field(60.0, gt=0, le=3600, validation_alias="NOTIFY_RETRY_MAX_S")
    notify_service_silent_s: float = Field(30.0, ge=0, le=3600, validation_alias="NOTIFY_SERVICE_SILENT_S")  # 0 = off

    # bybit
    bybit_api_key: SecretStr | None = Field(None, validation_alias="BYBIT_API_KEY")
    bybit_api_secret: SecretStr | None = Field(None, validation_alias="BYBIT_API_SECRET")
    live_trading_confirm: str = Field("", validation_alias="DEPTHPILOT_LIVE_TRADING_CONFIRM")

    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    _csv = field_validator(
        "symbols",
        "exchanges",
        "telegram_allowed_chat_ids",
        "features_emit",
        "replay_paths",
        "trader_autostart",
        mode="before",
    )(_split_csv)

    @field_validator("features_emit")
    @classmethod
    def _check_emit(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - {"snapshot", "block", "candle"})
        if bad or not v:
            raise ValueError(f"must be a comma-separated subset of snapshot,block,candle (got {bad or 'nothing'})")
        return v

    @field_validator("trader_autostart")
    @classmethod
    def _upper_autostart(cls, v: list[str]) -> list[str]:
        return [s.upper() for s in v]

    @field_validator("symbols")
    @classmethod
    def _upper_symbols(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one symbol is required")
        return [s.upper() for s in v]

    @field_validator("exchanges")
    @classmethod
    def _lower_exchanges(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one exchange is required")
        return [s.lower() for s in v]

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp(cls, v: str) -> str:
        scheme = urlsplit(v).scheme
        if scheme not in ("amqp", "amqps", "memory"):
            raise ValueError("must be amqp://, amqps:// or memory://")
        return v

    @field_validator("mongo_url")
    @classmethod
    def _check_mongo(cls, v: str) -> str:
        scheme = urlsplit(v).scheme
        if scheme not in ("mongodb", "mongodb+srv", "mongomock"):
            raise ValueError("must be mongodb://, mongodb+srv:// or mongomock://")
        return v

    @field_validator(
        "binance_ws_url", "binance_usdm_ws_url", "binance_coinm_ws_url", "bybit_ws_url", "ccxt_ws_base_url"
    )
    @classmethod
    def _check_ws_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError("must be ws://host[:port] or wss://host[:port]")
        return v.rstrip("/")

    @field_validator("binance_rest_url", "binance_usdm_rest_url", "binance_coinm_rest_url")
    @classmethod
    def _check_rest_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be http://host[:port] or https://host[:port]")
        return v.rstrip("/")

    @field_validator("telegram_users")
    @classmethod
    def _check_users(cls, v: str) -> str:
        for item in (x.strip() for x in v.split(",")):
            if item and not re.fullmatch(r"\d+(\s*:\s*(viewer|trader))?", item, re.I):
                raise ValueError(f"{item!r} is not <user id>[:viewer|trader] (comma-separated)")
        return v

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return v

    @model_validator(mode="after")
    def _money_safety(self) -> "Settings":
        if self.mode is not Mode.PAPER:
            if self.bybit_api_key is None or self.bybit_api_secret is None:
                raise ValueError(
                    f"BYBIT_API_KEY and BYBIT_API_SECRET are required when DEPTHPILOT_MODE={self.mode.value}"
                )
        if self.mode is Mode.LIVE and self.live_trading_confirm != "yes":
            raise ValueError(
                "DEPTHPILOT_LIVE_TRADING_CONFIRM must be 'yes' to trade with real money (DEPTHPILOT_MODE=live)"
            )
        return self

    # ------------------------------------------------------------------ helpers
    def __repr_args__(self):
        return list(self.safe_dict().items())

    @property
    def memory_bus(self) -> bool:
        return self.amqp_url.startswith("memory://")

    def safe_dict(self) -> dict[str, Any]:
        """Settings for display: secrets masked, URL passwords redacted."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            val = getattr(self, name)
            if isinstance(val, SecretStr):
                val = "***" if val.get_secret_value() else ""
            elif name.endswith("_url") and isinstance(val, str):
                val = redact_url(val)
            elif isinstance(val, Enum):
                val = val.value
            elif isinstance(val, Decimal):
                val = str(val)  # exact, JSON-ready
            out[name] = val
        return out


def _alias_of(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    alias = getattr(field, "validation_alias", None) if field else None
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field_name.upper()


def load_settings(**overrides: Any) -> Settings:
    """Load settings; on error raise ConfigError with one line naming the variable."""
    env_file = os.environ.get("DEPTHPILOT_ENV_FILE", ".env") or None
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if not isinstance(x, int)]
        var = _alias_of(loc[0]) if loc else "settings"
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        if not loc:  # model-level rule; its message names the variables
            raise ConfigError(f"invalid configuration: {msg}") from None
        raise ConfigError(f"invalid configuration: {var}: {msg}") from None
