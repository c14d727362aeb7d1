"""Run the demo on the embedded database: an in-process worker, the status page, and
uploads and projects whose every status change is printed as it happens."""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

from .. import config, machine, registry
from ..run import messaging
from ..store import db
from ..run.inprocess import in_process_worker
from ..redact import redact_url
from ..status import LIFECYCLE

log = logging.getLogger(__name__)


@contextlib.contextmanager
def serve_status_page(host: str, port: int):
    """Serve the Flask app in a thread; yields its URL (None if the API is not installed)."""
    try:
        from api import create_app
    except ImportError:
        yield None
        return
    from werkzeug.serving import make_server

    try:
        server = make_server(host, port, create_app(), threaded=True)
    except OSError as exc:  # the port is taken: any free one will do for the demo
        log.warning("port %s is not free (%s); serving the status page on another port", port, exc)
        server = make_server(host, 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="proc-demo-http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/projects/admin/check-status/"
    finally:
        server.shutdown()


def counts_per_status() -> dict[str, int]:
    counts = {s.value: 0 for s in LIFECYCLE}
    for cls in registry.proc_classes():
        for row in cls._get_collection().aggregate([{"$group": {"_id": "$process_status", "n": {"$sum": 1}}}]):
            counts[row["_id"]] = counts.get(row["_id"], 0) + row["n"]
    return counts


def run_demo(*, uploads: int = 3, projects: int = 1, reports: int = 1, pace: float = 1.5,
             port: int = 5000, host: str = "127.0.0.1", serve: bool = True, linger: float = 0.0,
             concurrency: int = 3, out=None) -> dict:
    """Run the demo; returns the final counts per status.

    The worker has fewer threads (``concurrency``) than there is work at once, so messages
    wait DISPATCHED in the queue for a free worker, and the prechecks wait PENDING for a
    slot of their limit: every box of the status page gets its turn.
    """
    from .models import PACE, Project, Report, Upload

    out = out or sys.stdout
    settings = config.get()
    if not settings.embedded_db:
        out.write(f"note: the demo uses the configured database {redact_url(settings.mongodb_uri)}\n")
    config.configure(heartbeat_interval=min(settings.heartbeat_interval, 1.0))
    db.connect()
    registry.load_models()
    app = messaging.make_app(config.get(), broker_transport_options={"polling_interval": 0.05})
    messaging.set_app(app)
    PACE["seconds"] = pace
    start = time.monotonic()
    lock = threading.Lock()

    def show(t):
        name = registry.class_for(t.collection).__name__
        with lock:
            out.write(f"{time.monotonic() - start:7.2f}s  {name:<8} {str(t.id)[-6:]}  "
                      f"{(t.source.value if t.source else '-'):>18} -> {t.target.value:<18} "
                      f"#{t.attempt} {t.note or ''}\n")
            out.flush()

    machine.listeners.append(show)
    try:
        with serve_status_page(host, port) if serve else contextlib.nullcontext(None) as url, \
                in_process_worker(app, concurrency=concurrency + reports):
            if url:
                out.write(f"status page: {url}\n")
            out.write(f"database {settings.mongodb_uri}, broker {app.conf.broker_url} (in-process worker)\n")
            docs = []
            for i in range(uploads):
                upload = Upload(name=f"upload-{i + 1}", paths=[f"upload-{i + 1}/file-{j}.txt" for j in range(5)]
                                + [f"upload-{i + 1}/late.partial"])
                upload.save()
                docs.append(upload)
            for i in range(projects):
                project = Project(name=f"project-{i + 1}")
                project.save()
                docs.append(project)
            for i in range(reports):
                report = Report(name=f"report-{i + 1}")
                report.save()
                docs.append(report)
            for doc in docs:
                if isinstance(doc, Report):
                    doc.build()
                elif isinstance(doc, Upload):
                    doc.process_upload()
                else:
                    doc.run_prechecks()
            for doc in docs:
                doc.block_until_complete(timeout=300)
            counts = counts_per_status()
            out.write("\ncounts per status: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
            for doc in docs:
                out.write(f"  {doc!r}\n")
            if url and linger:
                out.write(f"\nthe status page stays up at {url} for {linger:g} s (Ctrl-C to stop)\n")
                out.flush()
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait(linger)
            return counts
    finally:
        machine.listeners.remove(show)
