"""``depthpilot --version``."""

from __future__ import annotations

import typer

from depthpilot_cli.common import app


def version() -> str:
    """The installed distribution's version, else the one in pyproject.toml (a plain checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("depthpilot")
    except PackageNotFoundError:
        import tomllib

        from depthpilot.paths import REPO_ROOT

        with open(REPO_ROOT / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"depthpilot {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    pass
