"""A Proc subclass whose method writes messages of any size, for the size caps (``proc.store.caps``)."""
from __future__ import annotations

from mongoengine import StringField

from proc import Proc, process


class Chatty(Proc):
    meta = {"collection": "test_chatty"}
    padding = StringField(default="")

    @process
    def shout(self, size: int, step_size: int = 0, warn_size: int = 0):
        """Reports a step and a warning of the given sizes, then fails with an error of ``size``."""
        if step_size:
            self.set_step("s" * step_size)
        if warn_size:
            self.warn("w" * warn_size)
        raise ValueError("x" * size)

    @process
    def quiet(self, *args, **kwargs):
        """Succeeds, saying nothing."""
