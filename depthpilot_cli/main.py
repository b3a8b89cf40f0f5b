"""The ``depthpilot`` command line (typer + rich): the composition root above the core
package and the services. Every module of this package registers its commands on the shared
app; this module imports them all."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import depthpilot_cli
from depthpilot_cli.common import DEFINITIONS_PATH, SERVICES, app, console, service_class, settings


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
        if not path.exists():
            console.print(f"[red]{path} is missing: run `depthpilot topology --write`[/red]")
            raise typer.Exit(1)
        if path.read_text() != text:
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
    """Show the effective settings (secrets masked) and the data directory they resolve to."""
    from depthpilot.paths import cache_dir, data_dir

    s = settings()
    table = Table("setting", "value")
    for k, v in s.safe_dict().items():
        table.add_row(k, json.dumps(v) if not isinstance(v, str) else v)
    d = data_dir()
    table.add_row("data directory (resolved)", f"{d}" + ("" if d.is_dir() else " (missing: `make sample-data`)"))
    table.add_row("cache directory (resolved)", f"{cache_dir()}")
    Console(width=200).print(table)


@app.command()
def run(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (same as ``python -m SERVICE``)."""
    if service not in SERVICES:
        console.print(f"[red]unknown service {service!r}; choose from {', '.join(SERVICES)}[/red]")
        raise typer.Exit(2)
    from depthpilot.service import run_service

    raise typer.Exit(run_service(service_class(service)))


@app.command()
def control(
    target: str = typer.Argument(..., help="service name or 'all'"),
    command: str = typer.Argument(..., help="e.g. status, ping, start_trading, stop_trading, reload_model"),
    arg: list[str] = typer.Option([], "--arg", help="key=value (repeatable)"),
    timeout: float = typer.Option(5.0),
) -> None:
    """Send a control command over the bus and print the reply."""
    import time

    from depthpilot import messages as m
    from depthpilot.bus import RpcTimeout, connect_bus

    s = settings()
    args = dict(a.split("=", 1) for a in arg)
    bus = connect_bus(s.amqp_url, "cli").start()
    # the deadline travels with the command: a service that gets it after we gave up drops it
    cmd = m.ControlCommand(
        target=target, command=command, args=args, requested_by="cli", expires_at=time.time_ns() + int(timeout * 1e9)
    )
    try:
        reply = bus.rpc(cmd, timeout)
    except RpcTimeout as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        bus.close()
    Console().print_json(data=m.to_builtins(reply))
    raise typer.Exit(0 if reply.ok else 1)


def _register_commands() -> None:
    for mod in pkgutil.iter_modules(depthpilot_cli.__path__):
        if mod.name not in ("common", "main", "__main__"):
            importlib.import_module(f"depthpilot_cli.{mod.name}")


_register_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
