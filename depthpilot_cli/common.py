"""What every ``depthpilot`` sub-command shares: the typer app, the consoles, settings
loading with one-line errors, time arguments and progress bars.

Commands live in the modules of this package, each registering on :data:`app`;
:mod:`depthpilot_cli.main` imports them all. Add a command by adding a module."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from depthpilot.paths import REPO_ROOT

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="depthpilot: order-book driven crypto trading pipeline"
)
console = Console(stderr=True)

SERVICES = ("collector", "features", "predictor", "trader", "notifier", "tgbot", "api")
DEFINITIONS_PATH = REPO_ROOT / "rabbitmq" / "definitions.json"


def settings():
    from depthpilot.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def service_class(name: str):
    mod = importlib.import_module(f"{name}.service")
    return mod.SERVICE


def time_arg(value: Optional[str], name: str) -> Optional[int]:
    """ns since epoch from an int or an ISO date/time (UTC when no zone)."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    import pandas as pd

    try:
        t = pd.Timestamp(value)
    except ValueError:
        console.print(f"[red]--{name}: not a time: {value!r} (ISO 8601 or ns since epoch)[/red]")
        raise typer.Exit(2) from None
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    return int(t.value)


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def load_spec(spec: Optional[Path]):
    from features.service import load_spec

    try:
        return load_spec(str(spec) if spec else None)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
