"""The HTTP app's settings, read and checked once, when the app is built.

Two kinds, read from two places:

- **Who may ask** (``SECURITY``): read from the ``PROC_*`` environment variables only
  (``PROC_API_TOKEN`` through ``proc.config``, the others here), never from ``FLASK_*``
  ones. A ``FLASK_PROC_API_TOKEN`` (or another of these with the ``FLASK_`` prefix) is
  refused rather than read, so nothing can turn the token off behind ``PROC_API_TOKEN``'s
  back. A token is refused unless it is at least ``MIN_TOKEN_LENGTH`` visible ASCII
  characters (basic auth and bearer then agree on its bytes).
- **Tunables** (``TUNABLES``): defaults, then ``FLASK_PROC_*`` (Flask's
  ``from_prefixed_env``), each checked to be a positive number of the right kind.

Any bad value raises ``StartupRefused`` naming the variable and the fix: a
``ConfigurationError`` for Python callers and ``procctl`` (one line, exit 2), and a click
error for ``flask --app api run`` (the same line, exit 2). Every entry point that serves
the app builds it (or calls ``load``) before it listens, so a bad setting stops it at
startup, never as a 500 at request time.
"""
from __future__ import annotations

import os

import click
from flask import Config

from proc import config as proc_config
from proc.exceptions import ConfigurationError

MIN_TOKEN_LENGTH = 32
MAX_CONTENT_LENGTH = 1024 * 1024
"""Request bodies over this many bytes answer 413 before they are read."""

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The ``Host`` names allowed when no token is set (any port)."""

TUNABLES: dict[str, tuple[type, object]] = {
    # Seconds a Celery inspect broadcast waits for workers to answer.
    "PROC_INSPECT_TIMEOUT": (float, 0.5),
    # Seconds between two in-place refreshes of the check-status page.
    "PROC_REFRESH_SECONDS": (float, 2),
    # The page's "Where time goes" panel is computed at most once per this many seconds
    # (0: on every request; see ZERO_ALLOWED).
    "PROC_TIMINGS_SECONDS": (float, 10),
    # The page's data is computed at most once per this many seconds per web process, shared
    # by every open page (0: on every request).
    "PROC_PAGE_SECONDS": (float, 2),
    # /metrics is collected at most once per this many seconds per web process, shared by
    # concurrent scrapes (0: on every scrape).
    "PROC_METRICS_SECONDS": (float, 5),
    # Processes per page in lists (``limit`` default of /api/procs).
    "PROC_PAGE_SIZE": (int, 50),
    # At most this many entries in the needs-attention list.
    "PROC_ATTENTION_LIMIT": (int, 200),
    # The recently-recovered list: the monitor's recoveries of the last this many hours,
    # at most PROC_RECOVERY_LIMIT of them.
    "PROC_RECOVERY_HOURS": (float, 24),
    "PROC_RECOVERY_LIMIT": (int, 50),
}

ZERO_ALLOWED = frozenset({"PROC_TIMINGS_SECONDS", "PROC_METRICS_SECONDS", "PROC_PAGE_SECONDS"})
"""Tunables for which 0 means something (no caching); every other one must be above 0."""

SECURITY = ("PROC_API_TOKEN", "PROC_METRICS_TOKEN", "PROC_METRICS_PUBLIC", "PROC_ALLOWED_HOSTS",
            "PROC_TRUSTED_ORIGINS", "PROC_TRUSTED_PROXIES")


class StartupRefused(ConfigurationError, click.ClickException):
    """A setting of the HTTP app is wrong: the server must not start."""

    exit_code = 2

    def __init__(self, message: str):
        ConfigurationError.__init__(self, message)
        click.ClickException.__init__(self, message)

    def __str__(self) -> str:
        return self.message


def load(test_config: dict | None = None) -> dict:
    """Every setting of the app, checked: defaults, ``FLASK_*``, then ``test_config``."""
    env = os.environ
    for name in SECURITY:
        if f"FLASK_{name}" in env:
            raise StartupRefused(f"FLASK_{name} is not read (it could override {name}): set {name} instead")
    values = Config(os.getcwd())
    values.from_mapping({name: default for name, (_, default) in TUNABLES.items()})
    values.update(PROC_BULK_LIMIT=proc_config.get().bulk_limit, JSON_SORT_KEYS=False,
                  MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH)
    values.update(security_from_env(env))
    values.from_prefixed_env()
    if test_config is not None:
        values.update(test_config)
    _check_tunables(values)
    _check_security(values)
    return dict(values)


def security_from_env(env) -> dict:
    """The ``SECURITY`` settings as the environment gives them (not yet checked)."""
    token = proc_config.get().api_token
    if token is None and "PROC_API_TOKEN" in env:  # set but empty: refused below, not ignored
        token = env["PROC_API_TOKEN"]
    return {
        "PROC_API_TOKEN": token,
        "PROC_METRICS_TOKEN": env.get("PROC_METRICS_TOKEN"),
        "PROC_METRICS_PUBLIC": env.get("PROC_METRICS_PUBLIC", "0"),
        "PROC_ALLOWED_HOSTS": _names(env.get("PROC_ALLOWED_HOSTS")),
        "PROC_TRUSTED_ORIGINS": _names(env.get("PROC_TRUSTED_ORIGINS")) or [],
        "PROC_TRUSTED_PROXIES": env.get("PROC_TRUSTED_PROXIES", "0"),
    }


def _names(value: str | None) -> list[str] | None:
    """A comma-separated list; None when unset or empty (the default then applies)."""
    names = [part.strip() for part in (value or "").split(",") if part.strip()]
    return names or None


def check_token(name: str, token) -> None:
    """A token must be at least ``MIN_TOKEN_LENGTH`` visible ASCII characters."""
    fix = (f"use at least {MIN_TOKEN_LENGTH} visible ASCII characters, e.g. "
           f"`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if not isinstance(token, str) or not token:
        raise StartupRefused(f"{name} is set but empty: unset it to serve on loopback only, or {fix}")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise StartupRefused(f"{name} has characters other than visible ASCII (spaces, accents, control "
                             f"characters), which basic auth and bearer do not send alike: {fix}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise StartupRefused(f"{name} is too short ({len(token)} characters; it could be guessed): {fix}")


def _check_tunables(values) -> None:
    kinds = {name: kind for name, (kind, _) in TUNABLES.items()} | {"PROC_BULK_LIMIT": int}
    for name, kind in kinds.items():
        value = values[name]
        ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
        low_ok = name in ZERO_ALLOWED and value == 0
        if not ok or not (0 < value < float("inf") or low_ok):
            what = "a whole number from 1 up" if kind is int else (
                "a number of seconds from 0 up" if name in ZERO_ALLOWED else "a positive number of seconds")
            raise StartupRefused(f"FLASK_{name}={value!r} is not {what}")


def _check_security(values) -> None:
    for name in ("PROC_API_TOKEN", "PROC_METRICS_TOKEN"):
        if values[name] is not None:
            check_token(name, values[name])
    values["PROC_METRICS_PUBLIC"] = _flag("PROC_METRICS_PUBLIC", values["PROC_METRICS_PUBLIC"])
    proxies = values["PROC_TRUSTED_PROXIES"]
    try:
        proxies = int(proxies)
    except (TypeError, ValueError):
        proxies = -1
    if not 0 <= proxies <= 10:
        raise StartupRefused(f"PROC_TRUSTED_PROXIES={values['PROC_TRUSTED_PROXIES']!r} is not the number of "
                             "reverse proxies in front of this server (0 to 10)")
    if proxies and not values["PROC_API_TOKEN"]:
        raise StartupRefused("PROC_TRUSTED_PROXIES needs PROC_API_TOKEN: behind a proxy every client looks "
                             "local, so without a token anyone reaching the proxy could act")
    values["PROC_TRUSTED_PROXIES"] = proxies
    for origin in values["PROC_TRUSTED_ORIGINS"]:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise StartupRefused(f"PROC_TRUSTED_ORIGINS: {origin!r} is not an origin; give scheme://host[:port] "
                                 "as the browser sees the page, e.g. https://proc.example.com")
    if values["PROC_ALLOWED_HOSTS"] is None and not values["PROC_API_TOKEN"]:
        values["PROC_ALLOWED_HOSTS"] = list(LOOPBACK_HOSTS)


def _flag(name: str, value) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("", "0", "false", "no"):
        return False
    raise StartupRefused(f"{name}={value!r} is not 1 or 0")
