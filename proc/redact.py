"""Hide credentials in URLs before they reach an error, a log line or a page."""
from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")
_QUERY_SECRET = re.compile(r"(?i)(?P<key>[?&](?:password|passwd|pwd|token|secret|sas)=)[^&\s]*")


def redact_url(url: str | None) -> str:
    """``redis://:s3cret@host:6379/0`` -> ``redis://:***@host:6379/0``.

    Works on any URL-like text, including MongoDB seed lists (``mongodb://u:p@a,b/db``),
    and on text that merely contains such URLs (error messages).
    """
    if not url:
        return ""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(url))
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)
