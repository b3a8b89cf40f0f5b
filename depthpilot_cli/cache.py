"""``depthpilot cache info|clear``: the catalogue of rebuilt books the backtests read
(:mod:`backtest.book_cache`)."""

from __future__ import annotations

import typer

from depthpilot_cli.common import app

cache_app = typer.Typer(no_args_is_help=True, help="The catalogue of rebuilt books (backtest, evaluate, optimize).")
app.add_typer(cache_app, name="cache")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


@cache_app.command("info")
def cache_info() -> None:
    """Where the catalogue lives, its entries and total size against the cap."""
    from backtest.book_cache import enabled, info

    i = info()
    state = "on" if enabled() else "off (DEPTHPILOT_BOOK_CACHE=0)"
    typer.echo(f"root: {i['root']}")
    typer.echo(f"entries: {i['entries']}, total {_mb(i['bytes'])} of {_mb(i['cap_bytes'])} (catalogue {state})")


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every entry (the next load of each recording rebuilds its books)."""
    from backtest.book_cache import clear, info

    root = info()["root"]
    n, size = clear()
    typer.echo(f"removed {n} entries ({_mb(size)}) from {root}")
