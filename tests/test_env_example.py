"""`.env.example` documents every environment variable the code reads, with the defaults the
code really has (`depthpilot config` prints the same), and `depthpilot config` shows the
resolved data directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from depthpilot.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("depthpilot", "depthpilot_cli", "collector", "features", "predictor", "trader", "notifier", "tgbot", "api")
# os.environ["X"], os.environ.get("X"), os.getenv("X"), environ.setdefault("X"), environ.pop("X")
ENV_READ = re.compile(r"""\b(?:environ(?:\.get|\.setdefault|\.pop)?\s*[\[(]|getenv\s*\()\s*["']([A-Z][A-Z0-9_]+)["']""")
EXAMPLE_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$")


def example_vars() -> dict[str, str | None]:
    """VAR -> value for set lines, None for commented-out (optional) ones."""
    out: dict[str, str | None] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        mm = EXAMPLE_LINE.match(line.strip())
        if mm:
            name, value = mm.group(1), mm.group(2).strip()
            if not line.startswith("#") or name not in out:
                out[name] = None if line.startswith("#") else value
    return out


def code_env_reads() -> dict[str, str]:
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                for name in ENV_READ.findall(line):
                    found.setdefault(name, f"{path.relative_to(REPO)}:{i}")
    return found


def settings_aliases() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif alias is not None:
            names.add(str(alias.choices[0]))  # type: ignore[union-attr]
    return names


def test_the_scan_finds_env_reads() -> None:
    found = code_env_reads()
    assert {"DEPTHPILOT_DATA_DIR", "API_PORT", "DEPTHPILOT_HEARTBEAT_FILE"} <= set(found)
    assert ENV_READ.findall('os.environ.get("FOO_BAR", "x") + os.environ["BAZ"]') == ["FOO_BAR", "BAZ"]


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = example_vars()
    missing = {name: where for name, where in code_env_reads().items() if name not in documented}
    missing.update({name: "a Settings field" for name in settings_aliases() if name not in documented})
    assert not missing, "undocumented in .env.example: " + ", ".join(f"{k} ({v})" for k, v in sorted(missing.items()))


def test_documented_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    aliases = settings_aliases()
    for name in aliases | {"MODE"}:
        monkeypatch.delenv(name, raising=False)
    defaults = load_settings().safe_dict()
    differ = []
    for name, value in example_vars().items():
        if value is None or name not in aliases:
            continue  # optional, or read by docker compose only
        documented = load_settings(**{name: value}).safe_dict()
        changed = {
            k: (defaults[k], documented[k])
            for k in defaults
            if defaults[k] != documented[k] and not (not defaults[k] and not documented[k])
        }
        if changed:
            differ.append(f"{name}={value}: default {changed}")
    assert not differ, "\n".join(differ)


def test_config_shows_the_resolved_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    monkeypatch.setenv("DEPTHPILOT_DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["config"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "data directory (resolved)" in res.output and str(tmp_path) in res.output


def test_version_and_topology_check_missing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from depthpilot_cli.main import app
    from depthpilot_cli.version import version

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"depthpilot {version()}"
    res = CliRunner().invoke(app, ["topology", "--check", "--path", str(tmp_path / "definitions.json")])
    assert res.exit_code == 1 and "missing" in res.output and "stale" not in res.output
