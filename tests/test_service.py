"""Service machinery: control replies, heartbeats, config errors stop start-up naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.bus.memory import MemoryBroker
from depthpilot.paths import REPO_ROOT
from depthpilot.settings import load_settings


def test_control_status_and_unknown_command(uid: str) -> None:
    from trader.service import TraderService

    MemoryBroker.reset(uid)
    settings = load_settings(AMQP_URL=f"memory://{uid}")
    bus = connect_bus(f"memory://{uid}", "trader").start()
    svc = TraderService(settings, bus, None)
    svc.heartbeat_interval_s = 0.1
    beats: list[m.ServiceHeartbeat] = []
    bus.subscribe("api.heartbeats", lambda msg, d: beats.append(msg))
    svc.start()
    client = connect_bus(f"memory://{uid}", "cli").start()
    try:
        reply = client.rpc(m.ControlCommand(target="trader", command="status"), timeout=3)
        assert reply.ok and reply.source == "trader" and reply.result["status"] == "ok"
        bad = client.rpc(m.ControlCommand(target="trader", command="self_destruct"), timeout=3)
        assert not bad.ok and "unknown command" in bad.error
        deadline = time.monotonic() + 3
        while not beats and time.monotonic() < deadline:
            time.sleep(0.02)
        assert beats and beats[0].service == "trader"
    finally:
        svc.stop()
        client.close()
        bus.close()


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("DEPTHPILOT_MODE", "yolo", "DEPTHPILOT_MODE"),
        ("RISK_MAX_LEVERAGE", "-2", "RISK_MAX_LEVERAGE"),
        ("AMQP_URL", "http://x", "AMQP_URL"),
        ("TELEGRAM_ALLOWED_CHAT_IDS", "12,abc", "TELEGRAM_ALLOWED_CHAT_IDS"),
    ],
)
def test_bad_config_stops_startup_with_one_line(var: str, value: str, needle: str) -> None:
    env = {**os.environ, var: value, "DEPTHPILOT_ENV_FILE": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "trader"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_live_mode_needs_keys_and_explicit_confirmation() -> None:
    from depthpilot.settings import ConfigError

    with pytest.raises(ConfigError, match="BYBIT_API_KEY"):
        load_settings(DEPTHPILOT_MODE="live")
    with pytest.raises(ConfigError, match="DEPTHPILOT_LIVE_TRADING_CONFIRM"):
        load_settings(DEPTHPILOT_MODE="live", BYBIT_API_KEY="k" * 18, BYBIT_API_SECRET="s" * 36)
    s = load_settings()
    assert s.mode.value == "paper"


def test_secrets_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "1234:" + "tokenpart" * 4  # a made-up bot token shape, built so no scanner mistakes it
    s = load_settings(
        TELEGRAM_BOT_TOKEN=secret,
        BYBIT_API_KEY="fake-key-1234",
        BYBIT_API_SECRET="fake-secret-5678",
        AMQP_URL="amqp://depthpilot:hunter2hunter2@rabbitmq:5672/%2F",
    )
    text = repr(s) + str(s.safe_dict())
    for needle in (secret, "fake-key-1234", "fake-secret-5678", "hunter2hunter2"):
        assert needle not in text
    import logging

    from depthpilot.service import setup_logging

    setup_logging(s)
    logging.getLogger("t").warning("connecting with %s", "amqp://depthpilot:hunter2hunter2@rabbitmq")
    assert "hunter2hunter2" not in capsys.readouterr().err
