"""JSON request bodies, read with their nesting bounded: never a ``RecursionError`` (a 500).

``json_object()`` answers 400 (``parameter: body``) for a body that is not JSON, not a JSON
object, or nested deeper than ``MAX_DEPTH`` (arrays and objects within one another); the
decoder's own recursion limit is caught too, so no depth of ``[[[[...`` reaches a view.
"""
from __future__ import annotations

import json

from flask import request

from .errors import bad_parameter

MAX_DEPTH = 8
"""The deepest nesting a body may have: the bulk body is 3 deep (body, filter, a list)."""


def depth(value) -> int:
    """How deeply lists and dicts nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def json_object(shape: str) -> dict:
    """The request body as a JSON object; 400 naming ``body`` and ``shape`` (what it should
    look like) otherwise."""
    try:
        body = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        body = None
    if not isinstance(body, dict):
        raise bad_parameter("body", f"the body must be a JSON object: {shape}")
    if depth(body) > MAX_DEPTH:
        raise bad_parameter("body", f"the body nests lists and objects more than {MAX_DEPTH} deep; "
                                    f"it should look like {shape}")
    return body
