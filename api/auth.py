"""Who may use the page and the API, and protection of POST actions against cross-site requests.

With ``PROC_API_TOKEN`` set, every route under ``/api/`` and ``/projects/admin/`` needs
the token, sent either as ``Authorization: Bearer <token>`` (scripts) or as the password
of HTTP basic auth (browsers; any user name, which is recorded as who did an action).
Without it they answer 401. (Without a token, ``api.guard`` answers only this machine.)

``/metrics`` needs a token when one is set: ``PROC_METRICS_TOKEN`` (good for ``/metrics``
and nothing else, so a scraper cannot act) or ``PROC_API_TOKEN``; ``PROC_METRICS_PUBLIC=1``
opens it. ``/healthz`` is open, but shows its details (URLs, errors) only to a request
carrying ``PROC_API_TOKEN`` (``g.health_details``). ``/static/`` is open.

A browser sends cached basic-auth credentials with any request to the site, even one a
page of another site triggers, so POST actions also need, all of:

- no ``Sec-Fetch-Site`` header, or one saying ``same-origin`` (or ``none``: typed by the user);
- no ``Origin`` header, or one naming this server (its ``Host``) or one of
  ``PROC_TRUSTED_ORIGINS`` (the page's address as the browser sees it behind a proxy that
  rewrites ``Host``);
- an ``Authorization: Bearer`` header or the ``X-Proc-Request`` header (the page's
  script sends it). Another site's page cannot add either header without a CORS
  preflight, which this server never grants.
"""
from __future__ import annotations

import hmac
import re
from urllib.parse import urlsplit

from flask import current_app, g, request

from .errors import ApiError

PROTECTED_PREFIXES = ("/api/", "/projects/admin/")
CSRF_HEADER = "X-Proc-Request"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = 'Basic realm="proc check-status", charset="UTF-8"'
_NAME = re.compile(r"[^A-Za-z0-9_.@-]")


def init_app(app) -> None:
    app.before_request(check_request)
    app.after_request(security_headers)


def security_headers(response):
    """Own assets only (no CDN, no inline script), no framing, nothing cached."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith(PROTECTED_PREFIXES):
        response.headers["Cache-Control"] = "no-store"
    return response


def check_request():
    config = current_app.config
    if request.path == "/metrics":
        check_metrics(config)
        return None
    if request.path == "/healthz":
        g.health_details = bool(config["PROC_API_TOKEN"]) and presented(config["PROC_API_TOKEN"]) is not None
        return None
    if not request.path.startswith(PROTECTED_PREFIXES):
        return None
    g.actor = authenticate(config["PROC_API_TOKEN"])
    if request.method not in SAFE_METHODS and request.routing_exception is None:
        refuse_cross_site()
    return None


def presented(token: str) -> str | None:
    """``"bearer"`` or the basic-auth user name if the request carries ``token``, else None;
    raises a 401 for a wrong one."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        if _same(header[7:].strip(), token):
            return "bearer"
        raise _unauthorized("the bearer token is not the right one")
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        if _same(auth.password or "", token):
            return _NAME.sub("", auth.username or "")[:64] or "basic"
        raise _unauthorized("the basic-auth password is not the right one")
    return None


def authenticate(token: str | None) -> str:
    """Who is asking (recorded as ``by`` in a process's history), or raise a 401."""
    if not token:
        return f"unauthenticated:{request.remote_addr or 'local'}"
    who = presented(token)
    if who is None:
        raise _unauthorized("this server requires PROC_API_TOKEN: send 'Authorization: Bearer <token>', "
                            "or sign in with the token as password")
    return f"token:{who}"


def check_metrics(config) -> None:
    """``/metrics``: open with ``PROC_METRICS_PUBLIC=1`` or when no token is set; else either token."""
    tokens = [t for t in (config["PROC_METRICS_TOKEN"], config["PROC_API_TOKEN"]) if t]
    if config["PROC_METRICS_PUBLIC"] or not tokens:
        return
    for token in tokens:
        try:
            if presented(token) is not None:
                return
        except ApiError:
            continue
    raise _unauthorized("/metrics needs PROC_METRICS_TOKEN (or PROC_API_TOKEN) as 'Authorization: Bearer "
                        "<token>' or as the basic-auth password; PROC_METRICS_PUBLIC=1 opens it")


def refuse_cross_site() -> None:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("Origin")
    if origin is not None and not _own_origin(origin):
        raise ApiError(403, f"cross-origin request refused (Origin {origin[:100]!r} is not this server; behind "
                            "a proxy that rewrites Host, list the page's origin in PROC_TRUSTED_ORIGINS)")
    bearer = request.headers.get("Authorization", "")[:7].lower() == "bearer "
    if not bearer and not request.headers.get(CSRF_HEADER):
        raise ApiError(403, f"a {request.method} needs an 'Authorization: Bearer' header or the "
                            f"'{CSRF_HEADER}: 1' header (the page sends it), so that another site "
                            "cannot make a browser send it")


def _own_origin(origin: str) -> bool:
    trusted = {o.rstrip("/").lower() for o in current_app.config["PROC_TRUSTED_ORIGINS"]}
    return origin.rstrip("/").lower() in trusted or urlsplit(origin).netloc.lower() == request.host.lower()


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": CHALLENGE})
