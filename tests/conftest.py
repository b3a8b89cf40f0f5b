"""Shared fixtures. RabbitMQ tests talk to the real broker on 127.0.0.1:5672 (``make test``
makes sure it runs); ``TEST_AMQP_URL`` points them elsewhere."""

from __future__ import annotations

import atexit
import fnmatch
import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# tests never read a developer's .env
os.environ.setdefault("DEPTHPILOT_ENV_FILE", "")

# tests never read or fill a developer's catalogue of rebuilt books (backtest.book_cache): one
# private cache directory per session (and per xdist worker), removed at exit
os.environ["DEPTHPILOT_CACHE_DIR"] = tempfile.mkdtemp(prefix="depthpilot-test-cache-")
atexit.register(shutil.rmtree, os.environ["DEPTHPILOT_CACHE_DIR"], True)

if TYPE_CHECKING:
    from tests.rabbit_admin import OwnNode

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

# ------------------------------------------------------------------ CI: a skip is a failure
# Under CI=true every skipped test FAILS (missing recordings, no rabbitmqctl, a missing optional
# package...), so a green CI run means the must-show tests ran. The only exceptions are listed
# here, each with the skip reason it excuses and why. Keep this list short.
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

EXCUSED_SKIPS: tuple[tuple[str, str, str], ...] = (
    # (node id glob, text the skip reason must contain, why this skip is acceptable under CI)
    (
        "tests/test_store*.py::*",
        "MONGO_URL",
        "the real-MongoDB variant of the store tests needs a server; GitHub CI sets MONGO_URL to "
        "its mongo service container, a bare `.ci/run` on a machine without MongoDB runs the "
        "mongomock variant only",
    ),
)


def excused_skip(nodeid: str, reason: str) -> str | None:
    """Why a skip of ``nodeid`` with ``reason`` is acceptable under CI (None: it is not)."""
    for pattern, needle, why in EXCUSED_SKIPS:
        if fnmatch.fnmatchcase(nodeid, pattern) and needle in reason:
            return why
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if not CI or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if excused_skip(rep.nodeid, reason):
        return
    rep.outcome = "failed"
    rep.longrepr = (
        f"CI=true: skipped tests fail. Skip reason: {reason}\n"
        "Provide what the test needs (recordings: `make sample-data` or DEPTHPILOT_DATA_DIR; "
        "rabbitmqctl on PATH), or excuse it with a reason in EXCUSED_SKIPS (tests/conftest.py)."
    )


def _broker_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A private vhost on the broker of ``TEST_AMQP_URL`` for this test session, deleted at
    the end (whatever the tests leave in it goes too). Named ``<vhost of TEST_AMQP_URL>-<id>``
    (``dptest-<id>`` for "/"), so parallel runs never meet."""
    from tests.rabbit_admin import BrokerAdmin, vhost_of, with_vhost

    if not _broker_answers(AMQP_URL):
        pytest.fail(f"RabbitMQ does not answer at {AMQP_URL.split('@')[-1]}: run `make test` (it starts the broker)")
    parent = vhost_of(AMQP_URL)
    vhost = f"{'dptest' if parent == '/' else parent}-{uuid.uuid4().hex[:8]}"
    try:
        admin = BrokerAdmin(AMQP_URL)
        admin.create_vhost(vhost)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield with_vhost(AMQP_URL, vhost)
    finally:
        admin.delete_vhost(vhost)


@pytest.fixture(scope="session")
def own_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator["OwnNode"]:
    """A RabbitMQ node of this session's own (own name, ports, data, cookie) for tests that
    stop and start a broker; shut down at the end. Missing RabbitMQ tools: skip, but FAIL
    under CI=true."""
    from tests.rabbit_admin import OwnNode

    node = OwnNode(tmp_path_factory.mktemp("rabbit-node"), f"dptest{uuid.uuid4().hex[:8]}")
    if not node.available:
        msg = "rabbitmq-server/rabbitmqctl not found: cannot start a RabbitMQ node of our own"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from depthpilot.paths import data_dir as _dd

    d = _dd()
    if not d.is_dir():
        pytest.skip(f"market-data recordings not found at {d} (set DEPTHPILOT_DATA_DIR or `make sample-data`)")
    return d


@pytest.fixture(params=["memory", "rabbitmq"])
def bus_url(request: pytest.FixtureRequest, uid: str) -> str:
    """Run a test on a private in-memory broker and on the real RabbitMQ."""
    if request.param == "memory":
        from depthpilot.bus.memory import MemoryBroker

        MemoryBroker.reset(uid)
        return f"memory://{uid}"
    return request.getfixturevalue("amqp_url")
