"""The mypy lint gate: the Makefile's lint target, its help line, the CI lint step and the README's
"Lint." bullet name the same packages, and every package of the project is in it (or listed
below as not yet type-clean, with the reason)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Packages kept out of the gate on purpose: package -> why.
NOT_YET: dict[str, str] = {}  # package -> why it is not type-checked yet


def _one(pattern: str, text: str, where: str) -> list[str]:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert len(found) == 1, f"{where}: expected one mypy command, found {found}"
    return found[0].split()


def _gates() -> dict[str, list[str]]:
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    lint_bullet = readme[readme.index("* **Lint.**") :].split("\n* ", 1)[0]
    return {
        "Makefile lint target": _one(r"^\t\$\(VENV\)/bin/mypy ([\w ]+?) \|\| rc=1", makefile, "Makefile"),
        "Makefile help": _one(r"^#   make lint .*?mypy ([\w ]+?) \(", makefile, "Makefile help"),
        "ci.yml lint step": _one(r"^\s+\.venv/bin/mypy ([\w ]+?)\s*$", ci, "ci.yml"),
        "README Lint.": _one(r"`mypy ([\w ]+?)`", lint_bullet, "README Lint. bullet"),
    }


def test_the_three_places_name_the_same_packages() -> None:
    gates = _gates()
    first = gates["Makefile lint target"]
    for where, pkgs in gates.items():
        assert pkgs == first, f"{where} runs mypy on {pkgs}, the Makefile's lint target on {first}"


def test_every_package_is_type_checked() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    gate = set(_gates()["Makefile lint target"])
    assert not (gate & NOT_YET.keys()), f"{sorted(gate & NOT_YET.keys())} are in the gate: drop them from NOT_YET"
    missing = packages - gate - NOT_YET.keys()
    assert not missing, f"packages not type-checked by `make lint`: {sorted(missing)}"
    assert not (gate - packages), f"the gate names unknown packages: {sorted(gate - packages)}"
