"""The ``depthpilot`` command line (typer + rich)."""
from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from depthpilot.paths import REPO_ROOT

app = typer.Typer(add_completion=False, no_args_is_help=True, help="depthpilot: order-book driven crypto trading pipeline")
console = Console(stderr=True)

SERVICES = ("collector", "features", "predictor", "trader", "notifier", "tgbot", "api")
DEFINITIONS_PATH = REPO_ROOT / "rabbitmq" / "definitions.json"


def _settings():
    from depthpilot.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def topology(
    write: bool = typer.Option(False, "--write", help="write rabbitmq/definitions.json"),
    check: bool = typer.Option(False, "--check", help="exit 1 if rabbitmq/definitions.json is stale"),
    path: Path = typer.Option(DEFINITIONS_PATH, help="definitions file"),
) -> None:
    """Print (or write/check) the RabbitMQ definitions generated from depthpilot/topology.py."""
    from depthpilot.topology import definitions_json

    text = definitions_json()
    if check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            console.print(f"[red]{path} is stale: run `depthpilot topology --write`[/red]")
            raise typer.Exit(1)
        console.print(f"{path} is up to date")
        return
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")
        return
    sys.stdout.write(text)


@app.command()
def config() -> None:
    """Show the effective settings (secrets masked)."""
    s = _settings()
    table = Table("setting", "value")
    for k, v in s.safe_dict().items():
        table.add_row(k, json.dumps(v) if not isinstance(v, str) else v)
    Console().print(table)


def _service_class(name: str):
    mod = importlib.import_module(f"{name}.service")
    return getattr(mod, "SERVICE")


@app.command()
def run(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (same as ``python -m SERVICE``)."""
    if service not in SERVICES:
        console.print(f"[red]unknown service {service!r}; choose from {', '.join(SERVICES)}[/red]")
        raise typer.Exit(2)
    from depthpilot.service import run_service

    raise typer.Exit(run_service(_service_class(service)))


@app.command("run-all")
def run_all(
    duration: Optional[float] = typer.Option(None, help="stop after N seconds (default: until Ctrl-C)"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="in-process bus and store (no Docker, no keys)"),
) -> None:
    """Run every service in ONE process on the in-memory bus and store."""
    import os

    from depthpilot.bus import connect_bus
    from depthpilot.service import open_store, setup_logging

    if memory:
        os.environ["AMQP_URL"] = "memory://"
        os.environ["MONGO_URL"] = "mongomock://"
    s = _settings()
    setup_logging(s)
    store = open_store(s)
    services = []
    for name in SERVICES:
        try:
            cls = _service_class(name)
        except (ImportError, AttributeError) as exc:
            console.print(f"[yellow]{name}: not available ({exc})[/yellow]")
            continue
        bus = connect_bus(s.amqp_url, name).start()
        services.append((cls(s, bus, store), bus))
    for svc, _bus in services:
        svc.start()
    console.print(f"[green]running {', '.join(svc.name for svc, _ in services)} in one process; Ctrl-C to stop[/green]")
    stop = threading.Event()
    t0 = time.monotonic()
    try:
        while not stop.wait(1.0):
            if duration is not None and time.monotonic() - t0 >= duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        for svc, bus in reversed(services):
            svc.stop()
            bus.close()
    console.print("stopped")


@app.command()
def control(
    target: str = typer.Argument(..., help="service name or 'all'"),
    command: str = typer.Argument(..., help="e.g. status, ping, start_trading, stop_trading, reload_model"),
    arg: list[str] = typer.Option([], "--arg", help="key=value (repeatable)"),
    timeout: float = typer.Option(5.0),
) -> None:
    """Send a control command over the bus and print the reply."""
    from depthpilot import messages as m
    from depthpilot.bus import RpcTimeout, connect_bus

    s = _settings()
    args = dict(a.split("=", 1) for a in arg)
    bus = connect_bus(s.amqp_url, "cli").start()
    try:
        reply = bus.rpc(m.ControlCommand(target=target, command=command, args=args, requested_by="cli"), timeout)
    except RpcTimeout as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        bus.close()
    Console().print_json(data=m.to_builtins(reply))
    raise typer.Exit(0 if reply.ok else 1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
