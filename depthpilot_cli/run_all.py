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
    stop = threading.Event()
    t0 = time.monotonic()
    last_report = t0
    try:
        while not stop.wait(1.0):
            now = time.monotonic()
            if now - last_report >= 10:
                last_report = now
                console.print(_pipeline_summary(services), soft_wrap=True)
            if duration is not None and now - t0 >= duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        problems = [f"{svc.name}: {p}" for svc, _ in services for p in _problems(svc)]
        for svc, bus in reversed(services):
            svc.stop()
            bus.close()
    console.print(_pipeline_summary(services), soft_wrap=True)
    if problems:  # a service that was unhealthy at the end (a feed down, a replay that failed): non-zero exit
        for p in problems:
            console.print(f"[red]{p}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    console.print("stopped")


def _problems(svc) -> list[str]:
    fn = getattr(svc, "problems", None)
    return list(fn()) if callable(fn) else []


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
    return "pipeline | " + " | ".join(parts)

