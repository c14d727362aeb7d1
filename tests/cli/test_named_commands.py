"""Every ``procctl`` command the project names exists: in the docs, the README, the shipped
alert rules, the page's templates, and the string literals of proc/, api/ and migrations/
(hints, error messages, docstrings). Each named command path runs with ``--help`` as a
process of its own, as an operator would type it."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from support import PROJECT_DIR, venv_bin

ROOT = Path(PROJECT_DIR)
#: ``procctl`` and the plain words after it on the same line (stops at options, ids, quotes).
NAMED = re.compile(r"\bprocctl((?:[ \t]+[a-z][a-z0-9-]*)*)")
PLAIN = ("docs/*.md", "README.md", "docs/monitoring/*.yml", "api/templates/*")
PYTHON = ("proc/**/*.py", "api/**/*.py", "migrations/**/*.py")


def texts():
    """(where, text) of every file that names commands; for Python, each string literal."""
    for pattern in PLAIN:
        for path in sorted(ROOT.glob(pattern)):
            yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for pattern in PYTHON:
        for path in sorted(ROOT.glob(pattern)):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node.value


def command_path(words: list[str]) -> tuple[str, ...]:
    """The subcommands ``words`` name: the longest prefix that walks procctl's groups, plus
    the word a group does not know (so that one fails)."""
    from proc.cli import cli

    path, command = [], cli
    for word in words:
        commands = getattr(command, "commands", None)
        if commands is None:  # a command: what follows are its arguments
            break
        path.append(word)
        if word not in commands:
            break
        command = commands[word]
    return tuple(path)


def named_commands() -> dict[tuple[str, ...], list[str]]:
    """Each command path named anywhere, with where it is named."""
    found: dict[tuple[str, ...], list[str]] = {}
    for where, text in texts():
        for match in NAMED.finditer(text):
            found.setdefault(command_path(match.group(1).split()), []).append(where)
    return found


NAMED_COMMANDS = named_commands()


def test_the_extraction_finds_the_commands_the_docs_give():
    for path in [("serve",), ("monitor",), ("worker",), ("shell",), ("admin", "reset"), ("admin", "cancel"),
                 ("datafix", "upgrade"), ("standalone",), ("demo",)]:
        assert path in NAMED_COMMANDS, path
    assert command_path(["check"]) == ("check",)  # a word no group knows is kept, so it fails below
    assert command_path(["admin", "reset", "precheck", "abc"]) == ("admin", "reset")


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, ...], subprocess.Popen]:
    """``procctl PATH --help`` of every named path, started at once (each a process of its own)."""
    started = {path: subprocess.Popen([venv_bin("procctl"), *path, "--help"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=PROJECT_DIR)
               for path in NAMED_COMMANDS}
    yield started
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("path", sorted(NAMED_COMMANDS), ids=lambda p: " ".join(p) or "procctl")
def test_every_named_procctl_command_exists(path, helps):
    out, err = helps[path].communicate(timeout=120)
    assert helps[path].returncode == 0 and "Usage: procctl" in out, (
        f"`procctl {' '.join(path)}` is named in {NAMED_COMMANDS[path][:5]} but does not exist:\n{err}")
