"""A small supervisor for ``procctl standalone``: start children, watch them, restart the
ones that die (a budget per minute), stop them in order.

Every child runs in a session of its own (``start_new_session``), so a Ctrl-C on the
terminal reaches only the supervisor, which then stops the children in the order it
chooses, and so a whole child (a Celery worker and its pool, gunicorn and its workers) can
be killed as one process group. Each child's output goes to its own log file; the console
gets one line per event, prefixed with the child's name. Standard library only.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

RESTARTS_PER_MINUTE = 3
POLL = 0.1  # seconds between looks at the children


def say(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def describe_exit(code: int, hint: bool = True) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        oom = " (the OOM killer sends this)" if hint and code == -signal.SIGKILL else ""
        return f"killed by {name}{oom}"
    return f"exited with code {code}"


class StartFailed(Exception):
    """A child died or did not get ready while starting; the message names it."""


class Hurry(Exception):
    """A second Ctrl-C while stopping: kill everything at once."""


@dataclass
class Child:
    name: str
    args: list[str]
    log_path: str
    what: str  # said when it starts, e.g. "secantusd-py on 127.0.0.1:27017 (data DIR/db)"
    env: dict | None = None
    ready: Callable[["Child"], bool] = lambda child: True
    stop_timeout: float = 20.0
    on_stop: Callable[[], None] | None = None  # said/done when asked to stop
    on_stop_timeout: Callable[[float], None] | None = None  # before it is killed
    process: subprocess.Popen | None = None
    log_offset: int = 0  # where this run's output starts in the log
    is_ready: bool = False
    started_at: float = 0.0
    restarts: deque = field(default_factory=deque)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_since_start().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error:")]
        return (errors or lines or ["(no output)"])[-1][:300]


class Supervisor:
    def __init__(self):
        self.children: list[Child] = []
        self.stop_reason: str | None = None
        self.signals = 0

    # -- signals ----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        # Only flags here: the loops below look at them every POLL seconds.
        self.signals += 1
        if self.stop_reason is None:
            self.stop_reason = f"{signal.Signals(signum).name} received"

    def _check_hurry(self) -> None:
        if self.signals >= 2:
            raise Hurry()

    # -- starting ---------------------------------------------------------------------

    def start(self, child: Child, *, again: bool = False) -> None:
        os.makedirs(os.path.dirname(child.log_path), exist_ok=True)
        with open(child.log_path, "ab") as log:
            child.log_offset = log.tell()
            child.process = subprocess.Popen(child.args, env=child.env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        child.is_ready, child.started_at = False, time.monotonic()
        if child not in self.children:
            self.children.append(child)
        say(child.name, f"{'restarted' if again else 'started'} {child.what}, pid {child.process.pid} "
                        f"(log {child.log_path})")

    def _look_ready(self, child: Child) -> bool:
        if not child.is_ready and child.running and child.ready(child):
            child.is_ready = True
            say(child.name, f"ready after {time.monotonic() - child.started_at:.1f} s")
        return child.is_ready

    def wait_ready(self, children: list[Child], timeout: float = 60.0) -> None:
        """Until every child answers; ``StartFailed`` if one dies, does not answer in time,
        or a signal asks to stop."""
        deadline = time.monotonic() + timeout
        while True:
            for child in children:
                if not child.running:
                    raise StartFailed(f"{child.name} {describe_exit(child.process.returncode)} while "
                                      f"starting: {child.last_log_line()} (log {child.log_path})")
                self._look_ready(child)
            if all(child.is_ready for child in children):
                return
            if self.stop_reason:
                raise StartFailed(f"{self.stop_reason} while starting")
            if time.monotonic() > deadline:
                late = ", ".join(c.name for c in children if not c.is_ready)
                raise StartFailed(f"{late} not ready after {timeout:g} s (see {children[0].log_path})")
            time.sleep(POLL)  # polling the children, not synchronisation

    # -- watching ---------------------------------------------------------------------

    def watch(self) -> str:
        """Until a signal asks to stop or a child used up its restart budget; returns why."""
        while self.stop_reason is None:
            for child in self.children:
                if child.running:
                    self._look_ready(child)
                    continue
                if not self._restart(child):
                    break
            time.sleep(POLL)  # polling the children, not synchronisation
        return self.stop_reason

    def _restart(self, child: Child) -> bool:
        how = describe_exit(child.process.returncode)
        self._kill_group(child)  # what it left behind (pool processes, gunicorn workers)
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > 60:
            child.restarts.popleft()
        if len(child.restarts) >= RESTARTS_PER_MINUTE:
            say(child.name, f"died: {how}; last output: {child.last_log_line()}")
            self.stop_reason = (f"{child.name} died {len(child.restarts) + 1} times within a minute "
                                f"(last: {describe_exit(child.process.returncode, hint=False)})")
            return False
        child.restarts.append(now)
        say(child.name, f"died: {how}; last output: {child.last_log_line()}; restarting "
                        f"({len(child.restarts)} of {RESTARTS_PER_MINUTE} restarts allowed a minute)")
        self.start(child, again=True)
        return True

    # -- stopping ---------------------------------------------------------------------

    def stop(self, steps: list[list[Child]]) -> None:
        """Stop each step's children (SIGTERM, then SIGKILL after their ``stop_timeout``),
        step after step. A second signal meanwhile kills everything at once."""
        try:
            for step in steps:
                step = [child for child in step if child in self.children]
                for child in step:
                    self._terminate(child)
                for child in step:
                    self._wait_stopped(child)
        except Hurry:
            self.kill_all()

    def _terminate(self, child: Child) -> None:
        if not child.running:  # it died before (and that was said): nothing to stop
            self._kill_group(child)
            self.children.remove(child)
            return
        if child.on_stop:
            child.on_stop()
        try:
            os.kill(child.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _wait_stopped(self, child: Child) -> None:
        if child not in self.children:
            return
        deadline = time.monotonic() + child.stop_timeout
        while child.process.poll() is None and time.monotonic() < deadline:
            self._check_hurry()
            time.sleep(POLL)  # polling the child, not synchronisation
        if child.process.poll() is None:
            if child.on_stop_timeout:
                child.on_stop_timeout(child.stop_timeout)
            self._kill_group(child)
            child.process.wait()
            say(child.name, f"killed (pid {child.process.pid}) after {child.stop_timeout:g} s")
        else:
            self._kill_group(child)
            code = child.process.returncode
            say(child.name, "stopped" + ("" if code in (0, -signal.SIGTERM) else f" ({describe_exit(code)})"))
        self.children.remove(child)

    def kill_all(self) -> None:
        """SIGKILL every child's process group at once, saying what was killed."""
        for child in list(self.children):
            if child.running:
                self._kill_group(child)
                child.process.wait()
                say(child.name, f"killed at once (pid {child.process.pid} and its process group)")
            else:
                self._kill_group(child)
            self.children.remove(child)

    @staticmethod
    def _kill_group(child: Child) -> None:
        try:
            os.killpg(child.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
