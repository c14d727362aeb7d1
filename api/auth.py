"""Who may use the page and the API, and protection of POST actions against cross-site requests.

With ``PROC_API_TOKEN`` set, every route under ``/api/`` and ``/projects/admin/`` needs
the token, sent either as ``Authorization: Bearer <token>`` (scripts) or as the password
of HTTP basic auth (browsers; any user name, which is recorded as who did an action).
Without it they answer 401. ``/healthz``, ``/metrics`` and ``/static/`` stay open: they
carry counts, never documents or credentials.

A browser sends cached basic-auth credentials with any request to the site, even one a
page of another site triggers, so POST actions also need, all of:

- no ``Sec-Fetch-Site`` header, or one saying ``same-origin`` (or ``none``: typed by the user);
- no ``Origin`` header, or one naming this server;
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
    if not request.path.startswith(PROTECTED_PREFIXES):
        return None
    g.actor = authenticate(current_app.config.get("PROC_API_TOKEN"))
    if request.method not in SAFE_METHODS and request.routing_exception is None:
        refuse_cross_site()
    return None


def authenticate(token: str | None) -> str:
    """Who is asking (recorded as ``by`` in a process's history), or raise a 401."""
    header = request.headers.get("Authorization", "")
    if not token:
        return f"unauthenticated:{request.remote_addr or 'local'}"
    if header[:7].lower() == "bearer ":
        if _same(header[7:].strip(), token):
            return "token:bearer"
        raise _unauthorized("the bearer token is not PROC_API_TOKEN")
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        if _same(auth.password or "", token):
            user = _NAME.sub("", auth.username or "")[:64] or "basic"
            return f"token:{user}"
        raise _unauthorized("the basic-auth password is not PROC_API_TOKEN")
    raise _unauthorized("this server requires PROC_API_TOKEN: send 'Authorization: Bearer <token>', "
                        "or sign in with the token as password")


def refuse_cross_site() -> None:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        raise ApiError(403, "cross-origin request refused (Origin is not this server)")
    bearer = request.headers.get("Authorization", "")[:7].lower() == "bearer "
    if not bearer and not request.headers.get(CSRF_HEADER):
        raise ApiError(403, f"a {request.method} needs an 'Authorization: Bearer' header or the "
                            f"'{CSRF_HEADER}: 1' header (the page sends it), so that another site "
                            "cannot make a browser send it")


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": CHALLENGE})
