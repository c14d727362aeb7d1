"""``procctl shell`` driven through a pseudo-terminal (pexpect), as an operator types: Python's
own shell and IPython, tab completion, the banner's examples pasted as they are printed, and the
helpers, whose actions the history records as done by ``shell:<user>``."""
from __future__ import annotations

import os
import re
from datetime import timedelta

import pexpect
import pytest

from api_seed import seed
from proc.demo.models import Upload
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow
from support import PROJECT_DIR, venv_bin

pytestmark = pytest.mark.timeout(240)

_CODES = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"
PROMPTS = {"plain": lambda n: ">>> ", "ipython": lambda n: rf"In \[{_CODES}{n}{_CODES}\]: "}
ERRORS = re.compile(r"Traceback|^\w*Error\b|\\n", re.MULTILINE)  # "\n" on screen: an escaped string


class Shell:
    """One ``procctl shell`` in a pseudo-terminal."""

    def __init__(self, flavour: str, database_uri: str, broker_url: str, tmp_path):
        env = dict(os.environ, MONGODB_URI=database_uri, CELERY_BROKER_URL=broker_url, USER="alice",
                   LOGNAME="alice", IPYTHONDIR=str(tmp_path / "ipython"), TERM="xterm", NO_COLOR="1")
        args = ["shell", "--plain"] if flavour == "plain" else ["shell"]
        self.prompt, self.count = PROMPTS[flavour], 1  # IPython numbers its prompts, and redraws them
        self.child = pexpect.spawn(venv_bin("procctl"), args, env=env, cwd=PROJECT_DIR, encoding="utf-8",
                                   timeout=60, dimensions=(50, 250))
        self.child.expect(self.prompt(self.count))
        self.banner = self.child.before

    def run(self, line: str) -> str:
        """Type ``line`` and Enter; what it printed (echo and terminal codes left out)."""
        self.child.sendline(line)
        self.count += 1
        self.child.expect(self.prompt(self.count))
        return clean(self.child.before).replace(line, "", 1)

    def close(self) -> None:
        self.child.sendline("exit()")
        self.child.expect(pexpect.EOF)
        self.child.close()


def clean(text: str) -> str:
    """Screen text without terminal control sequences (IPython draws with them)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r", "", text)


@pytest.fixture(params=["plain", "ipython"])
def shell(request, database_uri, redis_url, tmp_path):
    opened = Shell(request.param, database_uri, redis_url, tmp_path)
    opened.flavour = request.param
    yield opened
    opened.close()


def test_the_banner_names_the_shell_and_its_examples_run_as_pasted(shell):
    assert ("IPython 9" if shell.flavour == "ipython" else "Python; tab completes") in shell.banner
    assert "recorded as done by shell:alice" in shell.banner
    examples = [line.strip() for line in clean(shell.banner).split("Try:", 1)[1].strip().splitlines()]
    assert len(examples) == 3 and examples[0] == "stuck()"
    for example in examples:
        out = shell.run(example)
        assert not ERRORS.search(out), (example, out)
        assert out.strip(), example


def test_tab_completes_names_and_every_model_is_there(shell):
    shell.child.send("recent_fai\t")
    shell.child.expect("recent_failures")
    shell.child.send("\x15")  # Ctrl-U: drop the line
    out = shell.run("sorted({'Upload', 'Entry', 'Project', 'Precheck', 'Report', 'ProcessStatus', 'db'} & set(dir()))")
    assert "['Entry', 'Precheck', 'ProcessStatus', 'Project', 'Report', 'Upload', 'db']" in out


@pytest.mark.real_server  # the shell is a process of its own: it shares the test's database on a real server only
def test_the_helpers_find_describe_and_repair_recorded_as_done_by_the_shell_user(shell):
    failed = seed(Upload, S.FAILURE, errors=["ValueError: the file is empty"])
    lost = seed(Upload, S.RUNNING, age=3600, heartbeat=utcnow() - timedelta(hours=1))

    out = shell.run("stuck()")
    assert f"[0] upload/{lost} RUNNING (attempt 1)" in out and "heartbeat" in out, out
    out = shell.run("recent_failures('upload.process_upload')")
    assert f"[0] upload/{failed} process_upload attempt 1" in out and "ValueError: the file is empty" in out
    out = shell.run(f"describe('upload/{failed}')")
    assert f"Upload {failed}" in out and "status:    FAILURE" in out and not ERRORS.search(out), out

    assert f"upload/{failed}: READY (attempt 1), by shell:alice" in shell.run("reset(recent_failures('upload')[0])")
    assert f"upload/{lost}: FAILURE (attempt 1), by shell:alice" in shell.run("cancel(stuck()[0])")
    assert Upload.objects.get(pk=failed).history[-1]["by"] == "shell:alice"
    cancelled = Upload.objects.get(pk=lost)
    assert cancelled.history[-1]["by"] == "shell:alice" and cancelled.errors[-1] == "cancelled by shell:alice"
    assert "nothing needs attention" in shell.run("stuck()")


def test_a_helper_given_nothing_or_a_wrong_id_says_what_it_needs_in_one_line(shell):
    out = shell.run("reset(None)")
    assert "cannot reset None: no document (None; a query that found nothing?)" in out and not ERRORS.search(out)
    out = shell.run("cancel('upload/123')")
    assert "cannot cancel upload/123: '123' is not an id of collection 'upload'" in out and not ERRORS.search(out)
