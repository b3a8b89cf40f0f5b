"""``depthpilot run-all``: every service in ONE process on the in-memory bus and store."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer

from depthpilot_cli.common import SERVICES, app, console, service_class, settings


@app.command("run-all")
def run_all(
    duration: Optional[float] = typer.Option(None, help="stop after N seconds (default: until Ctrl-C)"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="in-process bus and store (no Docker, no keys)"),
) -> None:
    """Run every service in ONE process on the in-memory bus and store. Ctrl-C or SIGTERM stops it."""
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
    ensure_demo_data()
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
    from depthpilot.service import close_bus
    from depthpilot_cli import run_view

    view_bus = connect_bus(amqp_url, "run-all-view").start() if trading else None
    client = c.ControlClient(view_bus, requested_by="run-all") if view_bus is not None else None
    live = None
    if console.is_terminal:
        from rich.live import Live

        live = Live(console=console, refresh_per_second=2, transient=False)
        live.start()
    stop = threading.Event()

    def _on_sigterm(_signum: int, _frame: Any) -> None:
        stop.set()  # like Ctrl-C: summary, services stopped, exit 0

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
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
        signal.signal(signal.SIGTERM, previous)
        if live is not None:
            live.stop()
        final = None
        if client is not None:
            for _ in range(3):  # a busy machine may answer slowly: ask again
                final = run_view.fetch(client, timeout_s=5.0)
                if not final.error:
                    break
        unconfirmed = 0
        problems = [f"{svc.name}: {p}" for svc, _ in services for p in _problems(svc)]
        for svc, bus in reversed(services):
            svc.stop()
            unconfirmed += close_bus(bus)
        if view_bus is not None:
            unconfirmed += close_bus(view_bus)
    console.print(_pipeline_summary(services), soft_wrap=True)
    if final is not None:
        console.print(run_view.line(final), soft_wrap=True)
        console.print(run_view.summary(final), soft_wrap=True)
    if unconfirmed:
        console.print(f"[red]{unconfirmed} published state messages were never confirmed by the broker[/red]")
        console.print("stopped")
        raise typer.Exit(3)
    if problems:  # a service that was unhealthy at the end (a feed down, a replay that failed): non-zero exit
        for p in problems:
            console.print(f"[red]{p}[/red]", soft_wrap=True)
        raise typer.Exit(1)


def ensure_demo_data(base_url: str | None = None) -> None:
    """The replay demo needs a recording. When none is found (and REPLAY_PATHS is not set), fetch
    the sample one (checksummed) into the data directory; when that is impossible (no network),
    exit 2 with one line saying what to do."""
    from collector.service import DEFAULT_RECORDING
    from depthpilot.paths import REPO_ROOT, data_dir
    from depthpilot.sample_data import DEFAULT_BASE_URL, SampleDataError, fetch

    if os.environ.get("COLLECTOR_SOURCE", "live") != "replay" or os.environ.get("REPLAY_PATHS"):
        return
    if (data_dir() / DEFAULT_RECORDING).exists():
        return
    env_dir = os.environ.get("DEPTHPILOT_DATA_DIR")
    dest = Path(env_dir).expanduser() if env_dir else REPO_ROOT / "data"
    dataset = DEFAULT_RECORDING.split("/", 1)[0]
    console.print(f"no recording {DEFAULT_RECORDING} in {data_dir()}: fetching the sample recording into {dest}")
    try:
        fetch(dest, base_url=base_url or DEFAULT_BASE_URL, datasets=[dataset], retries=1, retry_wait=0.5)
    except SampleDataError:
        console.print(
            f"[red]no recordings found in {data_dir()} and they cannot be downloaded from here: "
            "set DEPTHPILOT_DATA_DIR to a directory that holds them, or run `make sample-data` "
            "on a machine with internet[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    os.environ["DEPTHPILOT_DATA_DIR"] = str(dest)


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
        elif svc.name == "trader":
            parts.append(f"trader: {st.get('intents', 0):.0f} orders, {st.get('fills', 0):.0f} fills")
    return "pipeline | " + " | ".join(parts)
