"""Size caps: facts about how large what proc writes may be, and the one place that applies them.

- **Messages.** Every message written to ``errors``, ``warnings``, ``current_process_step``
  or a history entry's ``note``/``by`` goes through ``message()`` on its way to the
  database (``proc.machine`` calls it in ``write_of`` and ``update_fields``, the two writers
  every status, progress and warning write uses): at most ``MESSAGE_CHARS`` characters, the
  rest replaced by ``"... (N more characters)"``. So a document holds at most
  ``PROC_MESSAGES_LIMIT`` capped errors and warnings, one capped step, and history entries
  whose text is capped: a 9 MB exception message costs 8 KiB, and a list row stays small.
- **Arguments.** ``process_args`` (the JSON of the call's args and kwargs) is at most
  ``ARGS_BYTES``; ``check_args()`` refuses a larger call before anything is written.
- **Documents.** MongoDB refuses a document over ``DOCUMENT_BYTES`` (16 MiB);
  ``too_large()`` recognises that refusal (``DocumentTooLarge`` from the driver, or the
  server's ``BSONObjectTooLarge``/10334, 17419, 17420), so an ending write it hits can end
  the attempt FAILURE with a short error instead of leaving it RUNNING
  (``proc.run.execution``). The embedded database refuses the same (``proc.store.embedded``).
"""
from __future__ import annotations

import json

from pymongo.errors import DocumentTooLarge, OperationFailure

from ..exceptions import ProcError

MESSAGE_CHARS = 8 * 1024
"""The most characters of one message kept (8 KiB of ASCII text)."""
ARGS_BYTES = 64 * 1024
"""The most bytes of the JSON of a call's arguments (``process_args``): pass ids, not data."""
DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's document size limit (BSON)."""
TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
"""Server error codes of a document over the limit: BSONObjectTooLarge, and the "resulting
document after update is larger than ..." of older servers."""
#: The fields of a write whose value is a message.
MESSAGE_FIELDS = ("current_process_step",)


class ArgumentsTooLarge(ProcError, ValueError):
    """A process was called with arguments over ``ARGS_BYTES``; nothing was written."""


def message(value) -> str:
    """``value`` as text of at most ``MESSAGE_CHARS`` characters, saying how many were cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= MESSAGE_CHARS:
        return text
    return f"{text[:MESSAGE_CHARS]}... ({len(text) - MESSAGE_CHARS} more characters)"


def messages(values) -> list[str]:
    return [message(v) for v in values]


def fields(values) -> dict:
    """The ``$set`` of a write with its message fields capped (a step set to None stays None)."""
    out = dict(values)
    for name in MESSAGE_FIELDS:
        if out.get(name) is not None:
            out[name] = message(out[name])
    return out


def check_args(kind_name: str, args, kwargs) -> None:
    """Refuse a call whose arguments are not JSON-able or, as JSON, over ``ARGS_BYTES``."""
    try:
        size = len(json.dumps([list(args), kwargs], allow_nan=False).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"arguments of {kind_name} must be JSON-able ({exc}); pass ids or plain "
                        "values, not documents or objects") from None
    except RecursionError:
        raise ArgumentsTooLarge(f"arguments of {kind_name} nest too deeply to be stored; pass ids or "
                                "plain values") from None
    if size > ARGS_BYTES:
        raise ArgumentsTooLarge(
            f"arguments of {kind_name} are {size:,} bytes as JSON, over the limit of {ARGS_BYTES:,} "
            "(proc.store.caps.ARGS_BYTES): they are kept on the document (process_args); pass ids or "
            "paths and let the process read the data. Nothing was written.")


def too_large(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a document (or a command) over its size limit."""
    if isinstance(exc, DocumentTooLarge):
        return True
    if isinstance(exc, OperationFailure):
        name = (exc.details or {}).get("codeName") if isinstance(exc.details, dict) else None
        return exc.code in TOO_LARGE_CODES or name == "BSONObjectTooLarge"
    return False
