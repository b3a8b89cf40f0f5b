"""The one option set of ``depthpilot backtest`` / ``evaluate`` / ``optimize``: declared once,
parsed once into :class:`BacktestOptions` (costs, trader config, model, inputs), and shared by the
three commands through :func:`backtest_options`."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from depthpilot_cli.common import console, time_arg


def err(msg: str) -> None:
    """One line on stderr, never wrapped or parsed as markup."""
    console.print(msg, style="red", soft_wrap=True, markup=False, highlight=False)


def fail(msg: str) -> typer.Exit:
    err(msg)
    return typer.Exit(2)


def trader_config(config: Path | None, sets: list[str]):
    """TraderConfig from a JSON/TOML file (flat, or under a ``[trader]`` table) and ``--set k=v``."""
    from trader.config import TraderConfig, config_from_dict, config_to_dict, parse_param

    cfg = TraderConfig()
    if config is not None:
        try:
            text = config.read_text()
            if config.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise fail(f"--config {config}: {exc}") from None
        if isinstance(data, dict):
            data = data.get("trader", data)
        if not isinstance(data, dict):
            raise fail(f"--config {config}: want a table of TraderConfig fields (flat or under [trader])")
        unknown = sorted(set(data) - set(config_to_dict(cfg)))
        if unknown:  # config_from_dict would ignore them: a typo must not silently run the default
            raise fail(f"--config {config}: unknown parameter(s) {', '.join(unknown)}")
        try:
            cfg = config_from_dict({k: str(v) for k, v in data.items()})
        except ValueError as exc:
            raise fail(f"--config {config}: {exc}") from None
    for s in sets:
        name, sep, value = s.partition("=")
        if not sep:
            raise fail(f"--set {s!r}: want name=value")
        try:
            cfg = parse_param(cfg, name.strip(), value)
        except ValueError as exc:
            raise fail(f"--set {s}: {exc}") from None
    return cfg


def run_config(config, sets, latency_ms: float, taker_fee: str | None, funding_rate: str | None, balance: str):
    from decimal import Decimal, InvalidOperation

    from backtest.run import RunConfig
    from trader.domain import Fees

    try:
        fees = Fees(taker=Decimal(taker_fee)) if taker_fee is not None else Fees()
        fr = Decimal(funding_rate) if funding_rate is not None else None
        bal = Decimal(balance)
    except InvalidOperation:
        raise fail("--taker-fee / --funding-rate / --balance: not a decimal number") from None
    if latency_ms < 0:
        raise fail("--latency-ms must be >= 0")
    return RunConfig(
        trader=trader_config(config, sets), fees=fees, latency_ns=int(latency_ms * 1e6), balance=bal, funding_rate=fr
    )


def parse_grid(text: str, base) -> dict[str, tuple[Any, ...]]:
    """``--grid`` JSON: every field a TraderConfig field, every value accepted by it."""
    from trader.config import parse_param

    try:
        g = json.loads(text)
        if not isinstance(g, dict) or not g or not all(isinstance(v, list) and v for v in g.values()):
            raise ValueError("want a JSON object of non-empty lists")
        for k, vals in g.items():
            for v in vals:
                parse_param(base, k, str(v))
    except ValueError as exc:
        raise fail(f"--grid: {exc}") from None
    return {k: tuple(parse_param(base, k, str(v)).__getattribute__(k) for v in vals) for k, vals in g.items()}


@dataclass
class BacktestOptions:
    """Everything the three commands share, parsed and checked."""

    model: Path | None
    cfg: Any  # backtest.run.RunConfig
    fills: Any  # backtest.candle_fills.CandleFills
    history: list[Path] = field(default_factory=list)
    start: int | None = None
    end: int | None = None
    random_draws: int = 20
    seed: int = 0
    period_s: float = 10.0
    book_cache: bool = True  # read/write the catalogue of rebuilt books (backtest.book_cache)

    def predictor(self):
        from backtest.signals import load_model

        try:
            return load_model(self.model)
        except Exception as exc:  # noqa: BLE001 - an artifact that does not load: one line, not a traceback
            raise fail(f"--model {self.model}: {type(exc).__name__}: {exc}") from None

    def prepare(self, pred, path: Path):
        """The books, signals and rows of one input (see :mod:`backtest.inputs`)."""
        from backtest.data import BacktestInputError
        from backtest.inputs import prepare

        try:
            return prepare(
                pred,
                path,
                latency_ns=self.cfg.latency_ns,
                fills=self.fills,
                trader=self.cfg.trader,
                history=self.history,
                start=self.start,
                end=self.end,
                book_cache=self.book_cache,
            )
        except BacktestInputError as exc:
            raise fail(f"{exc}") from None


# name -> (type, default): the shared typer parameters, in the order the help lists them
_SHARED: dict[str, tuple[Any, Any]] = {
    "model": (
        Path | None,
        typer.Option(None, "--model", "-m", help="model artifact dir (default: the bundled book model)"),
    ),
    "config": (Path | None, typer.Option(None, "--config", help="TraderConfig fields as JSON or TOML")),
    "sets": (list[str], typer.Option([], "--set", help="a TraderConfig field, name=value (repeatable)")),
    "latency_ms": (
        float,
        typer.Option(50.0, help="order latency: the fill sees the book this long after the decision"),
    ),
    "taker_fee": (str | None, typer.Option(None, help="taker fee fraction (default 0.00055)")),
    "funding_rate": (str | None, typer.Option(None, help="funding rate per 8 h at 00/08/16 UTC (off by default)")),
    "balance": (str, typer.Option("10000", help="starting balance")),
    "random_draws": (int, typer.Option(20, help="random-entry baseline draws")),
    "seed": (int, typer.Option(0)),
    "period_s": (float, typer.Option(10.0, help="return period of Sharpe / Sortino (annualised)")),
    "start": (
        str | None,
        typer.Option(None, help="trade and score from this time (ISO or ns); earlier data is warm-up"),
    ),
    "end": (str | None, typer.Option(None, help="trade and score before this time (ISO or ns)")),
    "history": (
        list[Path],
        typer.Option([], "--history", help="candle models: kline file(s) before the input, for indicator warm-up"),
    ),
    "half_spread_bps": (
        float,
        typer.Option(0.5, help="kline-only backtests: modelled half-spread paid on each fill, bps"),
    ),
    "slippage_bps": (float, typer.Option(1.0, help="kline-only backtests: modelled slippage on each fill, bps")),
    "no_book_cache": (
        bool,
        typer.Option(
            False,
            "--no-book-cache",
            help="rebuild the books from the recording; neither read nor write the catalogue of rebuilt books",
        ),
    ),
}


def options_from(kw: dict[str, Any]) -> BacktestOptions:
    from backtest.candle_fills import CandleFills

    cfg = run_config(kw["config"], kw["sets"], kw["latency_ms"], kw["taker_fee"], kw["funding_rate"], kw["balance"])
    try:
        fills = CandleFills(kw["half_spread_bps"], kw["slippage_bps"])
    except ValueError as exc:
        raise fail(f"--half-spread-bps / --slippage-bps: {exc}") from None
    return BacktestOptions(
        model=kw["model"],
        cfg=cfg,
        fills=fills,
        history=list(kw["history"]),
        start=time_arg(kw["start"], "start"),
        end=time_arg(kw["end"], "end"),
        random_draws=kw["random_draws"],
        seed=kw["seed"],
        period_s=kw["period_s"],
        book_cache=not kw["no_book_cache"],
    )


def backtest_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared options: typer sees them as parameters after the command's own,
    the command receives them parsed as ``opts: BacktestOptions`` (its last parameter)."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for name, p in sig.parameters.items() if name != "opts"]
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t) for n, (t, d) in _SHARED.items()
    ]

    @functools.wraps(fn)
    def wrapper(**kw: Any) -> None:
        mine = {p.name: kw.pop(p.name) for p in own}
        fn(**mine, opts=options_from(kw))

    # inspect.signature reads __signature__ of any function; typeshed's function type lacks the attribute
    wrapper.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + shared} | {"return": None}
    del wrapper.__wrapped__  # typer must read the signature above, not the command's own
    return wrapper
