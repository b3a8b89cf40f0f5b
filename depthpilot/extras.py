"""Optional dependencies: import a module that belongs to an extra of the package, or fail with
one line naming the extra to install (``pip install 'depthpilot[train]'``).

Extras (pyproject.toml): ``train`` (scikit-learn, matplotlib, optuna: ``depthpilot train``),
``demo`` (mongomock-ng: the embedded store of ``make run``), ``dev`` (tests, lint, lock file).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; ``str(exc)`` is one line naming the extra."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtra` saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        raise MissingExtra(
            f"{purpose} needs the '{extra}' extra (no module {missing!r}): pip install 'depthpilot[{extra}]'"
        ) from None
