"""``depthpilot run-all``: every service in ONE process on the in-memory bus and store."""
from __future__ import annotations

import threading
import time
from typing import Optional

import typer

from depthpilot_cli.common import SERVICES, app, console, service_class, settings


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
        # the demo: replay a real recording (no internet, no keys), looping, 5x real time
        os.environ.setdefault("COLLECTOR_SOURCE", "replay")
        os.environ.setdefault("REPLAY_SPEED", "5")
        os.environ.setdefault("REPLAY_LOOP", "true")
        # the demo trades the replayed symbol on paper from the start
        os.environ.setdefault("DEPTHPILOT_MODE", "paper")
        if "TRADER_AUTOSTART" not in os.environ:
            os.environ["TRADER_AUTOSTART"] = os.environ.get("DEPTHPILOT_SYMBOLS", "BTCUSDT")
    s = settings()
    setup_logging(s)
    store = open_store(s)
    services = []
    for name in SERVICES:
        try:
            cls = service_class(name)
        except (ImportError, AttributeError) as exc:
            console.print(f"[yellow]{name}: not available ({exc})[/yellow]")
            continue
        bus = connect_bus(s.amqp_url, name).start()
        services.append((cls(s, bus, store), bus))
    started = []
    for svc, bus in services:
        try:
            svc.start()
            started.append((svc, bus))
        except Exception as exc:  # noqa: BLE001 - one line, stop what started, non-zero exit
            console.print(f"[red]{svc.name}: cannot start: {exc}[/red]")
            for other, obus in reversed(started):
                other.stop()
                obus.close()
            bus.close()
            raise typer.Exit(2) from None
    console.print(f"[green]running {', '.join(svc.name for svc, _ in services)} in one process; Ctrl-C to stop[/green]")
    _watch(services, duration, s.amqp_url, trading=any(svc.name == "trader" for svc, _ in services))
    console.print("stopped")


def _watch(services: list, duration: Optional[float], amqp_url: str, trading: bool) -> None:
    """Show the pipeline and the paper trading until Ctrl-C / ``duration``: a live view on a
    terminal, one summary every 10 s otherwise; stop the services; print the summary."""
    from depthpilot import control as c
    from depthpilot.bus import connect_bus
    from depthpilot_cli import run_view

    view_bus = connect_bus(amqp_url, "run-all-view").start() if trading else None
    client = c.ControlClient(view_bus, requested_by="run-all") if view_bus is not None else None
    live = None
    if console.is_terminal:
        from rich.live import Live

        live = Live(console=console, refresh_per_second=2, transient=False)
        live.start()
    stop = threading.Event()
    t0 = time.monotonic()
    last_report = t0
    try:
        while not stop.wait(1.0):
            now = time.monotonic()
            if live is not None:
                v = run_view.fetch(client) if client else None
                live.update(run_view.render(v, _pipeline_summary(services)) if v else _pipeline_summary(services))
            elif now - last_report >= 10:
                last_report = now
                console.print(_pipeline_summary(services), soft_wrap=True)
                if client is not None:
                    console.print(run_view.line(run_view.fetch(client)), soft_wrap=True)
            if duration is not None and now - t0 >= duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        final = None
        for _ in range(3 if client is not None else 0):  # a busy machine may answer slowly: ask again
            final = run_view.fetch(client, timeout_s=5.0)
            if not final.error:
                break
        for svc, bus in reversed(services):
            svc.stop()
            bus.close()
        if view_bus is not None:
            view_bus.close()
    console.print(_pipeline_summary(services), soft_wrap=True)
    if final is not None:
        console.print(run_view.line(final), soft_wrap=True)
        console.print(run_view.summary(final), soft_wrap=True)


def _pipeline_summary(services: list) -> str:
    parts = []
    for svc, _bus in services:
        st = svc.stats()
        if svc.name == "collector":
            parts.append(f"collector: {st.get('published', 0):.0f} snapshots")
        elif svc.name == "features":
            parts.append(f"features: {st.get('vectors_published', 0):.0f} vectors")
        elif svc.name == "predictor":
            lat = f" (book->signal p50 {st['latency_ms_p50']:.1f} ms)" if "latency_ms_p50" in st else ""
            parts.append(f"predictor: {st.get('signals', 0):.0f} signals{lat}")
        elif svc.name == "trader":
            parts.append(f"trader: {st.get('intents', 0):.0f} orders, {st.get('fills', 0):.0f} fills")
    return "pipeline | " + " | ".join(parts)

