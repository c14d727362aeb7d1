"""Toy datafixes and application sequences for the datafix tests: each toy ``NNNN`` turns a
field ``toy_NNNN`` into ``done_NNNN: True`` (and back), in a directory whose
``sequence.txt`` names its sequence."""
from __future__ import annotations

from pathlib import Path

TOY = '''"""Toy datafix {rev}."""
revision = "{rev}"
description = "toy {rev}"
selector = {{"toy_{rev}": {{"$exists": True}}}}
invalid = {{"_never_": {{"$exists": True}}}}


def upgrade(ctx):
    ctx.rewrite(select=selector, backup=("toy_{rev}", "done_{rev}"), rows={{}},
                pipeline=[{{"$set": {{"done_{rev}": True}}}}, {{"$unset": ["toy_{rev}"]}}])


def downgrade(ctx):
    ctx.restore(select={{"done_{rev}": True}}, witness=("done_{rev}",), expected=lambda b: {{"done_{rev}": True}},
                inverse=[{{"$unset": ["done_{rev}"]}}], rows={{}})
'''


def sequence_dir(root: Path, name: str, *revs: str, marker: str | None = None) -> Path:
    """``root/name`` holding toys ``revs``, its ``sequence.txt`` saying ``marker`` (default ``name``)."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sequence.txt").write_text(f"{marker or name}\n")
    for rev in revs:
        add_toy(directory, rev)
    return directory


def add_toy(directory: Path, rev: str) -> Path:
    path = directory / f"{rev}_toy.py"
    path.write_text(TOY.format(rev=rev))
    return path
