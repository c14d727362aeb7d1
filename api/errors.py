"""Errors as JSON under /api/ (and plain pages elsewhere), never with credentials in them.

Every error body under ``/api/`` is ``{"error": "<what is wrong>", "status": <code>}``
plus ``"parameter": "<name>"`` when one request parameter is at fault.
"""
from __future__ import annotations

import logging

from flask import jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from proc.exceptions import DatabaseUnavailable
from proc.redact import redact_text
from pymongo.errors import ConnectionFailure

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client mistake (4xx) or a conflict, answered as a JSON error."""

    def __init__(self, status: int, message: str, parameter: str | None = None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.headers = headers or {}


def bad_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, message, parameter)


def whole_number(parameter: str, value: str | None, *, default: int, high: int,
                 what: str = "an integer", high_means: str = "") -> int:
    """Query parameter ``parameter``: a whole number from 1 to ``high`` (``default`` when
    absent or empty), written with ASCII digits only (not ``²``, ``٣``, ``1_0`` or `` 5``,
    which ``int()`` would take or choke on); otherwise 400 naming it, saying
    ``{parameter} must be {what} from 1 to {high}{high_means}, got ...``."""
    if value in (None, ""):
        return default
    fix = f"{parameter} must be {what} from 1 to {high}{high_means}"
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(high)) + 8:
        raise bad_parameter(parameter, f"{fix}, got {value[:40]!r}")
    number = int(value)
    if not 1 <= number <= high:
        raise bad_parameter(parameter, f"{fix}, got {number}")
    return number


def error_response(status: int, message: str, parameter: str | None = None, headers=None):
    body = {"error": redact_text(message), "status": status}
    if parameter:
        body["parameter"] = parameter
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/metrics")


def init_app(app) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        if wants_json():
            return error_response(exc.status, exc.message, exc.parameter, exc.headers)
        return _page(exc.status, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if wants_json():
            response = error_response(exc.code or 500, exc.description or exc.name)
            if exc.code == 405 and exc.valid_methods:
                response.headers["Allow"] = ", ".join(exc.valid_methods)
            return response
        return exc

    @app.errorhandler(ConnectionFailure)
    @app.errorhandler(DatabaseUnavailable)
    def _database_unreachable(exc: Exception):
        """The database did not answer (down, or this host cut off from it): 503, in words."""
        from proc.store import db

        log.warning("the database did not answer on %s %s: %s", request.method, request.path, type(exc).__name__)
        message = (f"The database is unreachable: MongoDB at MONGODB_URI={db.uri()} did not answer "
                   f"({type(exc).__name__}). Nothing can be shown or changed until it answers again; "
                   "check that it runs and that this host can reach it. This page recovers by itself.")
        if wants_json():
            return error_response(503, message, headers={"Retry-After": "5"})
        return _page(503, message, {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = f"internal error ({type(exc).__name__}); see the server log"
        if wants_json():
            return error_response(500, message)
        return InternalServerError(message)


def _page(status: int, message: str, headers):
    from flask import render_template

    return render_template("error.html", status=status, message=redact_text(message)), status, headers
