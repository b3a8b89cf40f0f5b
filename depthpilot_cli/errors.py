"""Known bad-input errors of the data commands -> ONE line on stderr and exit code 2.

``features build`` and ``train`` wrap their work in :func:`one_line_errors`: a bad file, a
missing column, a truncated gzip or an unknown option value prints ``<command>: <what is
wrong>`` (the file and line are part of the error's own text) instead of a traceback; with
``--debug`` the traceback is shown. Anything else (a bug) still raises with its traceback.
"""

from __future__ import annotations

import sys
import zlib
from contextlib import contextmanager
from typing import Iterator

import typer

# ValueError covers RecordingError, BinanceFormatError, ReplayError, SourceError, pandas'
# EmptyDataError/ParserError; OSError covers missing files and gzip.BadGzipFile; EOFError is a
# truncated gzip (click would otherwise print just "Aborted!"); KeyError a missing column.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError, zlib.error, KeyError)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing column or key {text}"
    elif isinstance(exc, EOFError):
        text = f"truncated input ({text})"
    return text


@contextmanager
def one_line_errors(command: str, debug: bool = False) -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except KNOWN_ERRORS as exc:
        if debug:
            raise
        print(f"{command}: {one_line(exc)}", file=sys.stderr)
        raise typer.Exit(2) from None
