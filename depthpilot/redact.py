"""Redaction of secrets in URLs and error texts, shared by settings, bus and store."""

from __future__ import annotations

import re
from urllib.parse import unquote

_SECRET_PARAM_HINTS = ("password", "secret", "token", "authmechanismproperties", "key")


def redact_url(url: str) -> str:
    """URL safe to log: password (everything after ``user:``) and secret-looking query
    parameter values replaced by ``***``. Errs on the side of redacting too much."""
    if not isinstance(url, str):
        return "<non-string url>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparseable url>"
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _pw = userinfo.partition(":")
        prefix = f"{user}:***@" if colon else f"{user}@"
    else:
        prefix = ""
    base, q, query = rest.partition("?")
    if q:
        parts = []
        for item in query.split("&"):
            key, eq, _val = item.partition("=")
            if eq and any(h in key.lower() for h in _SECRET_PARAM_HINTS):
                parts.append(f"{key}=***")
            else:
                parts.append(item)
        base = f"{base}?{'&'.join(parts)}"
    return f"{scheme}://{prefix}{base}"


def secrets_of(url: str) -> list[str]:
    _scheme, _sep, rest = url.partition("://")
    out: list[str] = []
    at = rest.rfind("@")
    if at >= 0:
        _user, colon, pw = rest[:at].partition(":")
        if colon and pw:
            out += [pw, unquote(pw)]
    _b, _q, query = rest.partition("?")
    for item in query.split("&"):
        key, eq, val = item.partition("=")
        if eq and val and any(h in key.lower() for h in _SECRET_PARAM_HINTS):
            out += [val, unquote(val)]
    return sorted(set(out), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    text = text.replace(url, redact_url(url))
    for s in secrets_of(url):  # as a whole token, so a short password does not mangle words
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", "***", text)
    return text


# the secret values this process knows (set once at start-up by the service's logging set-up):
# every text leaving the process for a person (log lines, chat replies) is masked with them
_KNOWN_SECRETS: list[str] = []


def register_secrets(values: list[str]) -> None:
    """Remember secret values (at least 4 characters; longest first) for :func:`mask_secrets`."""
    keep = {v for v in values if v and len(v) >= 4} | set(_KNOWN_SECRETS)
    _KNOWN_SECRETS[:] = sorted(keep, key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    for s in _KNOWN_SECRETS:
        text = text.replace(s, "***")
    return text
