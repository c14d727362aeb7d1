"""Checks every request passes first, on every route, whatever server runs the app.

In this order, each answering an error that names the setting to change:

1. **Client** (403), only while no ``PROC_API_TOKEN`` is set: the client must be on this
   machine (a loopback address or a Unix socket) and the request must carry no forwarding
   header (``Forwarded``, ``X-Forwarded-For``, ...): behind a reverse proxy on the same
   machine every client looks local.
2. **Host** (400): the ``Host`` header must be one of ``PROC_ALLOWED_HOSTS`` (any port).
   Without a token the default is the loopback names (``localhost``, ``127.0.0.1``,
   ``[::1]``), so a page of another site whose name was rebound to 127.0.0.1 (DNS
   rebinding) is refused; with a token, the default is any.
3. **Size** (413): a body whose ``Content-Length`` is over ``MAX_CONTENT_LENGTH`` (1 MiB) is
   refused before it is read; a chunked one is read up to that size, and refused past it.

``PROC_TRUSTED_PROXIES=N`` (with a token) wraps the app in werkzeug's ``ProxyFix``, trusting
the last ``N`` proxies' ``X-Forwarded-For/-Proto/-Host/-Port/-Prefix``. Redirects the router
makes (the 308 that merges slashes or adds the trailing one) get a relative ``Location``,
never one built from ``Host``.
"""
from __future__ import annotations

import io
import ipaddress
from urllib.parse import urlsplit

from flask import current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import host_is_trusted

from .errors import ApiError

FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip")


def init_app(app) -> None:
    proxies = app.config["PROC_TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies,
                                x_port=proxies, x_prefix=proxies)
    app.before_request(check_request)
    app.after_request(relative_location)


def check_request():
    if not current_app.config["PROC_API_TOKEN"]:
        check_local_client()
    check_host()
    check_size()


def check_host() -> None:
    allowed = current_app.config["PROC_ALLOWED_HOSTS"]
    if not host_allowed(request.host, allowed):
        why = "" if current_app.config["PROC_API_TOKEN"] else (
            " Without PROC_API_TOKEN only the loopback names are allowed by default, so that no other "
            "site's page can reach this server through a name rebound to this machine (DNS rebinding).")
        raise ApiError(400, f"Host {request.host[:100]!r} is not allowed here: add it to PROC_ALLOWED_HOSTS "
                            f"(comma-separated names).{why}")


def host_allowed(host: str, allowed: list[str] | None) -> bool:
    """``host`` (``name[:port]``) is a well-formed host (werkzeug's check) whose name, any port,
    is one of ``allowed`` (``.example.com`` also matches its subdomains); None allows any."""
    if not host_is_trusted(host):
        return False
    if not allowed:
        return True
    name = host[:host.index("]") + 1] if host.startswith("[") else host.partition(":")[0]
    name = name.lower()
    for entry in (a.lower() for a in allowed):
        if name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def check_local_client() -> None:
    forwarded = next((name for name in FORWARDING_HEADERS if name in request.headers), None)
    if forwarded:
        raise ApiError(403, f"this server has no PROC_API_TOKEN, so it answers clients on its own machine "
                            f"only, and this request came through a proxy (it carries {forwarded}): "
                            "set PROC_API_TOKEN to serve through a proxy")
    if not is_loopback_address(request.remote_addr):
        raise ApiError(403, f"this server has no PROC_API_TOKEN, so it answers clients on its own machine "
                            f"only, not {request.remote_addr}: set PROC_API_TOKEN to serve other machines")


def is_loopback_address(address: str | None) -> bool:
    """A loopback IP (IPv4-mapped ones included), or no address at all (a Unix socket)."""
    if not address:
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def check_size() -> None:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is None and request.environ.get("wsgi.input_terminated"):
        length = _buffer_streamed_body(limit)
    if length is not None and length > limit:
        raise ApiError(413, f"the request body has {'more than ' if length == limit + 1 else ''}{length} "
                            f"bytes; at most {limit} are accepted")


def _buffer_streamed_body(limit: int) -> int:
    """A body without ``Content-Length`` (chunked), read up to ``limit`` + 1 bytes and handed to
    the view as if it had one (werkzeug would cut it at ``limit`` silently); returns its length,
    ``limit + 1`` meaning "more"."""
    stream, data = request.environ["wsgi.input"], b""
    while len(data) <= limit:
        chunk = stream.read(min(65536, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) <= limit:
        request.environ["wsgi.input"] = io.BytesIO(data)
        request.environ["CONTENT_LENGTH"] = str(len(data))
        for name in ("wsgi.input_terminated", "HTTP_TRANSFER_ENCODING"):
            request.environ.pop(name, None)
    return len(data)


def relative_location(response):
    """The router's redirects (a 308 that merges slashes or adds the trailing one) name an
    absolute URL built from ``Host``: keep only its path and query."""
    location = response.headers.get("Location")
    if location and "://" in location:
        target = urlsplit(location)
        response.headers["Location"] = target.path + (f"?{target.query}" if target.query else "")
    return response
