"""Test-side RabbitMQ administration: a private vhost per test session on the shared broker,
and a private RabbitMQ node for tests that must stop a broker.

* Vhosts are made through the management HTTP API (``http://<host>:15672``) when it
  answers, else with ``rabbitmqctl`` (the local broker's own CLI).
* :class:`OwnNode` starts ``rabbitmq-server`` with its own node name, ports, config,
  plugins file, data and log dirs and Erlang cookie, so stopping it never touches anybody
  else's broker.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(url: str, vhost: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + quote(vhost, safe=""), p.query, p.fragment))


def find_tool(name: str, *, prefer_real: bool = False) -> str | None:
    """``prefer_real``: the Debian scripts under /usr/lib/rabbitmq/bin (not the /usr/sbin
    wrapper, which switches to the rabbitmq user and its cookie) for a node of our own."""
    real = Path("/usr/lib/rabbitmq/bin") / name
    if prefer_real and os.access(real, os.X_OK):
        return str(real)
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/usr/lib/rabbitmq/bin", "/opt/rabbitmq/sbin"):
        if os.access(Path(d) / name, os.X_OK):
            return str(Path(d) / name)
    return None


class BrokerAdmin:
    """Create/delete vhosts on the broker of ``url`` (management API, else rabbitmqctl)."""

    def __init__(self, url: str) -> None:
        p = urlsplit(url)
        self.host = p.hostname or "127.0.0.1"
        self.user = unquote(p.username or "guest")
        self.password = unquote(p.password or "guest")
        self.mgmt = f"http://{self.host}:{os.environ.get('TEST_RABBITMQ_MGMT_PORT', '15672')}"
        self.ctl = find_tool("rabbitmqctl")
        self.use_http = self._http_answers()
        if not self.use_http and self.ctl is None:
            raise RuntimeError(
                f"cannot create a test vhost: no management API at {self.mgmt} and no rabbitmqctl "
                "(enable rabbitmq_management or run the tests next to the broker)"
            )

    def _http(self, method: str, path: str, body: dict | None = None) -> int:
        req = urllib.request.Request(
            self.mgmt + path, method=method, data=json.dumps(body).encode() if body is not None else None
        )
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def _http_answers(self) -> bool:
        try:
            return self._http("GET", "/api/overview") == 200
        except OSError:
            return False

    def _rabbitmqctl(self, *args: str) -> str:
        assert self.ctl is not None
        proc = subprocess.run([self.ctl, "-q", *args], capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def create_vhost(self, vhost: str) -> None:
        if self.use_http:
            v = quote(vhost, safe="")
            status = self._http("PUT", f"/api/vhosts/{v}", {})
            if status not in (201, 204):
                raise RuntimeError(f"management API refused to create vhost {vhost!r}: HTTP {status}")
            status = self._http(
                "PUT",
                f"/api/permissions/{v}/{quote(self.user, safe='')}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            )
            if status not in (201, 204):
                raise RuntimeError(f"management API refused permissions on {vhost!r}: HTTP {status}")
            return
        self._rabbitmqctl("add_vhost", vhost)
        self._rabbitmqctl("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        if self.use_http:
            self._http("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")
        else:
            self._rabbitmqctl("delete_vhost", vhost)

    def list_queues(self, vhost: str) -> list[str]:
        if self.use_http:
            req = urllib.request.Request(f"{self.mgmt}/api/queues/{quote(vhost, safe='')}")
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
            with urllib.request.urlopen(req, timeout=10) as resp:
                return [q["name"] for q in json.load(resp)]
        return self._rabbitmqctl("list_queues", "-p", vhost, "name", "--no-table-headers").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnNode:
    """A RabbitMQ node of our own: ``start()``, ``ctl("stop_app")``, ``url``, ``stop()``."""

    def __init__(self, base: Path, name: str) -> None:
        self.server = find_tool("rabbitmq-server", prefer_real=True)
        self.ctl_path = find_tool("rabbitmqctl", prefer_real=True)
        self.base = base
        self.node = f"{name}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.proc: subprocess.Popen | None = None

    @property
    def available(self) -> bool:
        return self.server is not None and self.ctl_path is not None

    def _env(self) -> dict[str, str]:
        b = self.base
        return {
            **os.environ,
            "HOME": str(b / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(b / "node.pid"),
        }

    def start(self, timeout: float = 90.0) -> None:
        assert self.server is not None
        for d in ("home", "mnesia", "log"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        cookie = self.base / "home" / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex())
        cookie.chmod(0o400)
        (self.base / "rabbitmq.conf").write_text("# test node: listener from RABBITMQ_NODE_IP_ADDRESS/PORT\n")
        (self.base / "enabled_plugins").write_text("[].\n")  # no management listener on the shared 15672
        with open(self.base / "server.out", "wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [self.server], env=self._env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self.proc.returncode}: "
                    f"{(self.base / 'server.out').read_text()[-2000:]}"
                )
            if self.ctl("await_startup", "--timeout", "20", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"own RabbitMQ node {self.node} did not start within {timeout}s")

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.ctl_path is not None
        proc = subprocess.run(
            [self.ctl_path, "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node} failed: {proc.stderr or proc.stdout}")
        return proc

    def stop(self) -> None:
        if self.proc is None:
            return
        self.ctl("stop", check=False)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # the session we started, by its id
            self.proc.wait(10)
        self.proc = None
