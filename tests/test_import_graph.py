"""The dependency rule, checked on the source (imports parsed with ``ast``, nothing imported):

* the core package ``depthpilot/`` imports no service package;
* the pipeline packages form a chain, collector -> features -> predictor -> trader: a package
  may import the PURE modules of packages upstream of it, never a downstream one, and never
  another package's wiring (``service``, ``__main__``);
* ``notifier``, ``tgbot`` and ``api`` use the core only (the control layer), plus their own package;
* ``depthpilot_cli`` (the composition root) may import anything; nothing imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = "depthpilot"
CLI = "depthpilot_cli"
PIPELINE = ("collector", "features", "predictor", "trader")
EDGE = ("notifier", "tgbot", "api")
PACKAGES = (CORE, *PIPELINE, *EDGE, CLI)
WIRING = ("service", "__main__")


def imports_of(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in ``path``, relative imports resolved,
    including those inside functions and ``TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg_parts = list(path.relative_to(root).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # `from pkg import service` names a module too
            out.extend((node.lineno, f"{mod}.{a.name}") for a in node.names)
    return out


def violation(importer_pkg: str, module: str) -> str | None:
    """Why ``importer_pkg`` may not import ``module`` (None when it may)."""
    parts = module.split(".")
    target = parts[0]
    if target not in PACKAGES or target == importer_pkg:
        return None
    if importer_pkg == CLI:
        return None
    if target == CLI:
        return "nothing imports the CLI (it is the composition root)"
    if target == CORE:
        return None
    if importer_pkg == CORE:
        return "the core imports no service package"
    if importer_pkg in EDGE:
        return f"{importer_pkg} uses the core only"
    if target in EDGE:
        return f"{target} is an edge service; nothing imports it"
    if PIPELINE.index(target) > PIPELINE.index(importer_pkg):
        return f"{target} is downstream of {importer_pkg} (collector -> features -> predictor -> trader)"
    if len(parts) > 1 and parts[1] in WIRING:
        return f"{module} is {target}'s wiring, not a pure module"
    return None


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_every_package_follows_the_dependency_rule() -> None:
    problems = []
    for path in _sources():
        pkg = path.relative_to(REPO).parts[0]
        for line, module in imports_of(path):
            why = violation(pkg, module)
            if why:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {module}: {why}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "importer,module,allowed",
    [
        ("depthpilot", "collector.book", False),
        ("depthpilot", "depthpilot.bus", True),
        ("features", "collector.book", True),
        ("features", "collector.service", False),
        ("features", "predictor.inference", False),
        ("predictor", "features.spec", True),
        ("predictor", "collector", True),
        ("trader", "predictor.__main__", False),
        ("api", "trader.domain", False),
        ("tgbot", "depthpilot.control", True),
        ("notifier", "api.app", False),
        ("collector", "depthpilot_cli.common", False),
        ("depthpilot_cli", "features.service", True),
        ("collector", "numpy", True),
    ],
)
def test_rule_itself(importer: str, module: str, allowed: bool) -> None:
    assert (violation(importer, module) is None) is allowed


def test_relative_and_nested_imports_are_seen(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    src = tmp_path / "features" / "probe.py"
    src.write_text("def f():\n    from ..predictor import service\n    import trader.domain\n")
    mods = [mod for _, mod in imports_of(src, root=tmp_path)]
    assert "predictor.service" in mods and "trader.domain" in mods
