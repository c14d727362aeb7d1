"""The check-status page: /projects/admin/check-status/ (rendered on the server, refreshed in place)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from proc import registry
from proc.ops import bulk
from proc.timeutil import format_age

from . import listing, queries, shared, where
from .estimates import at_most
from .json_api import status_data
from .overview import ACTIVE, STATUSES

bp = Blueprint("page", __name__, url_prefix="/projects/admin")


@bp.app_template_filter("age")
def age(seconds) -> str:
    """Seconds as "3m 12s"."""
    return format_age(seconds)


@bp.app_template_filter("duration")
def duration(seconds) -> str:
    """A threshold: "10m", "1h", "45s"; None (a function of the document): "per doc"."""
    if seconds is None:
        return "per doc"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _context(**extra) -> dict:
    return {"statuses": STATUSES, "active": ACTIVE, **extra}


def shared_status() -> dict:
    """``status_data()``, computed once per ``PROC_PAGE_SECONDS`` (the refresh interval) by this
    web process however many pages are open (``api.shared``): N browsers cost one computation
    per interval."""
    return shared.once_per("page_status", float(current_app.config["PROC_PAGE_SECONDS"]), status_data)


@bp.get("/check-status/")
def check_status():
    return render_template("check_status.html", **_context(
        data=shared_status(), timings=where.cached_panel(), refresh=current_app.config["PROC_REFRESH_SECONDS"]))


@bp.get("/check-status/live")
def live():
    """The part of the page that refreshes: boxes, hints, needs attention, kinds, where time
    goes, workers, queues."""
    return render_template("_live.html", **_context(data=shared_status(), timings=where.cached_panel()))


@bp.get("/check-status/procs")
def procs():
    """The list view: the filters of ``proc.ops.filters`` and the sort, all kept in the URL (a view
    can be shared), and the bulk actions on everything the filter matches."""
    args = request.args
    limit = listing.parse_limit(args.get("limit"), int(current_app.config["PROC_PAGE_SIZE"]))
    chosen = listing.filter_from_args(args)
    sort = listing.parse_sort(args.get("sort"))
    page = listing.list_procs(chosen, sort=sort, cursor=args.get("cursor"), limit=limit)
    matched = bulk.count(chosen)  # exact up to bulk.COUNT_CAP
    given = chosen.as_dict()
    query = {**given, "sort": None if sort == listing.DEFAULT_SORT else sort, "limit": limit}
    return render_template("procs.html", **_context(
        listing=page, filter=given, query=query, sort=sort, sorts=list(listing.SORTS),
        status=given.get("status", []), kind=given.get("kind", ""),
        kinds=[k.name for k in registry.kinds()], limit=limit, matching=at_most(matched, bulk.COUNT_CAP), matched=matched,
        bulk_limit=int(current_app.config["PROC_BULK_LIMIT"])))


@bp.get("/check-status/procs/<collection>/<id>")
def proc_detail(collection, id):
    return render_template("proc_detail.html", **_context(proc=queries.detail(collection, id)))
