"""Stored documents the current views cannot read: a field whose BSON type is not the one
its Proc model declares (a non-string ``current_process_step``, a string date, a string
``attempt``, a string ``errors``, a non-string ``current_process``).

The expectations are derived from the model's mongoengine fields (``proc.document.Proc``
and each ``PROC_MODELS`` subclass, per collection), so they follow the model: a
``StringField`` must hold a string, an ``IntField`` a number, a ``DateTimeField`` a date,
a ``ListField`` an array, a ``DictField`` an embedded document, a ``BooleanField`` a
boolean; a missing field or null is always readable. Only top-level types are checked
(the elements of an array are not: ``$elemMatch`` on scalars is not reliable on the
embedded database). Field kinds not listed here are not checked.

Per collection: one ``count_documents`` and one ``find`` (the first ``LISTED``) of the
``$or`` of every field's condition, whose answer says which field is wrong in Python by the
same rule (``wrong_fields``).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from bson import Decimal128
from mongoengine import fields as me

from proc.document import Proc

from . import keyset

#: Documents listed per collection (all are counted).
LISTED = 20

#: mongoengine field class -> (the ``$type`` aliases it reads, a Python check of a decoded
#: value, the word for the report). Order matters: subclasses before their bases.
KINDS: tuple = (
    (me.BooleanField, ("bool",), lambda v: isinstance(v, bool), "a boolean"),
    (me.IntField, ("int", "long", "double"),
     lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    (me.FloatField, ("double", "int", "long", "decimal"),
     lambda v: isinstance(v, (int, float, Decimal128)) and not isinstance(v, bool), "a number"),
    (me.DateTimeField, ("date",), lambda v: isinstance(v, datetime.datetime), "a date"),
    (me.ListField, ("array",), lambda v: isinstance(v, list), "an array"),
    (me.DictField, ("object",), lambda v: isinstance(v, dict), "an embedded document"),
    (me.StringField, ("string",), lambda v: isinstance(v, str), "a string"),
)


@dataclass(frozen=True)
class Expectation:
    """One stored field and the types the views read in it."""

    name: str
    aliases: tuple
    accepts: object
    word: str

    def query(self) -> dict:
        """Documents whose value is present, not null and of another type. An array is
        caught explicitly where no array is expected: ``$type`` also matches elements."""
        wrong = {"$nor": [{self.name: None}, *({self.name: {"$type": a}} for a in self.aliases)]}
        if "array" in self.aliases:
            return wrong
        return {"$or": [{self.name: {"$type": "array"}}, wrong]}

    def wrong(self, doc: dict) -> bool:
        value = doc.get(self.name)
        return value is not None and not self.accepts(value)


def expectations(model: type = Proc) -> list[Expectation]:
    """The checked fields of ``model`` (its stored names), from its mongoengine fields."""
    found = []
    for name, spec in model._fields.items():
        if name == "id":
            continue
        for kind, aliases, accepts, word in KINDS:
            if isinstance(spec, kind):
                found.append(Expectation(spec.db_field or name, aliases, accepts, word))
                break
    return found


def type_name(value) -> str:
    """The stored value's type with its article, as Python names it (``an int``, ``a str``)."""
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def wrong_fields(doc: dict, expected: list[Expectation]) -> list[str]:
    """``"attempt is a str, not a number"`` for each field of ``doc`` the views cannot read."""
    return [f"{e.name} is {type_name(doc.get(e.name))}, not {e.word}"
            for e in expected if e.wrong(doc)]


@dataclass
class Unreadable:
    """The documents of one collection the current views cannot read."""

    collection: str
    count: int = 0
    #: ``{"_id": ..., "problems": [...]}`` for the first ``LISTED``.
    docs: list = field(default_factory=list)

    def lines(self) -> list[str]:
        shown = [f"{self.collection} _id {d['_id']!r}: {'; '.join(d['problems'])}" for d in self.docs]
        if self.count > len(self.docs):
            shown.append(f"{self.collection}: and {self.count - len(self.docs)} more")
        return shown


def check(database, names, models: dict[str, type] | None = None) -> list[Unreadable]:
    """Per collection of ``names`` (the model of ``models``, else ``Proc``), the documents
    holding a field of a type the model does not declare."""
    found = []
    for name in names:
        expected = expectations((models or {}).get(name, Proc))
        query = {"$or": [e.query() for e in expected]}
        coll = database[name]
        count = coll.count_documents(query)
        if not count:
            continue
        projection = {e.name: 1 for e in expected}
        docs = [{"_id": d["_id"], "problems": wrong_fields(d, expected)}
                for d in keyset.first(coll, query, LISTED, projection)]
        found.append(Unreadable(name, count, docs))
    return found
