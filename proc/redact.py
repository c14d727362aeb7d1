"""Hide credentials in URLs before they reach an error, a log line or a page.

``redact_url`` takes one URL and rebuilds it from the parts a driver would read, split the
way that driver splits it (pymongo's rules for ``mongodb://`` and ``mongodb+srv://``,
without any DNS lookup; ``urllib.parse``, as kombu does, for broker URLs): the scheme, the
user name, the hosts, the path, and only the query parameters known to be safe. Everything
else is replaced by ``***``: the password, an unknown parameter's value
(``authMechanismProperties=AWS_SESSION_TOKEN:...``, ``tlsCertificateKeyFilePassword``), and
the whole address when the URL does not parse (an unescaped ``@`` or ``/`` in a password
makes it ``mongodb://***``).

``redact_text`` takes any text (an error message): it first replaces every secret of the
configured URLs (``remember``) found literally in it (so a password with a space or a ``/`` is hidden even
where the text cut the URL), then each URL-like word by ``redact_url``.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

HIDDEN = "***"

SAFE_PARAMETERS = frozenset(name.lower() for name in (
    # MongoDB connection-string options that carry no secret
    "replicaSet", "tls", "ssl", "authSource", "authMechanism", "readPreference", "readPreferenceTags",
    "maxStalenessSeconds", "w", "wTimeoutMS", "journal", "retryWrites", "retryReads", "appName",
    "directConnection", "loadBalanced", "connectTimeoutMS", "socketTimeoutMS", "serverSelectionTimeoutMS",
    "serverSelectionTryOnce", "heartbeatFrequencyMS", "localThresholdMS", "maxPoolSize", "minPoolSize",
    "maxIdleTimeMS", "maxConnecting", "waitQueueTimeoutMS", "timeoutMS", "compressors", "zlibCompressionLevel",
    "readConcernLevel", "uuidRepresentation", "srvMaxHosts", "srvServiceName", "tlsAllowInvalidCertificates",
    "tlsAllowInvalidHostnames", "tlsInsecure", "tlsDisableOCSPEndpointCheck",
    # Redis / kombu transport options that carry no secret
    "db", "virtual_host", "ssl_cert_reqs", "socket_timeout", "socket_connect_timeout", "health_check_interval",
    "master_name", "protocol",
))
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.,:-]*")
_SAFE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_SAFE_PATH = re.compile(r"[/A-Za-z0-9_.$%-]*")
_URL_WORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://\S*")
_TRAILING = "'\"),;]>."


def redact_url(url: str | None) -> str:
    """One URL with its secrets hidden: ``redis://:s3cret@host:6379/0`` -> ``redis://:***@host:6379/0``."""
    if not url:
        return ""
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # not a URL (a module list, a path): no credentials to find
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.\-]*", scheme):
        return HIDDEN
    if ";" in rest:  # kombu's failover list: url;url
        return ";".join(redact_url(part) for part in url.split(";"))
    parts = _split(scheme.lower(), rest)
    if parts is None:
        return f"{scheme}://{HIDDEN}"
    userinfo, hosts, path, query = parts
    out = f"{scheme}://"
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        out += f"{user}:{HIDDEN}@" if colon and "@" not in userinfo else f"{HIDDEN}@"
    out += hosts + path
    if query:
        out += "?" + _query(query)
    return out


def _split(scheme: str, rest: str):
    """``(userinfo or None, hosts, path, query)`` as the scheme's driver reads them, or None."""
    if scheme in ("mongodb", "mongodb+srv"):
        from pymongo.errors import ConfigurationError, InvalidURI
        from pymongo.uri_parser import parse_userinfo, split_hosts

        head, _, query = rest.partition("?")  # pymongo: options first, then the database
        hosts, slash, database = head.partition("/")
        userinfo = None
        if "@" in hosts:
            userinfo, _, hosts = hosts.rpartition("@")
            try:
                parse_userinfo(userinfo)
            except InvalidURI:
                userinfo = "@"  # not parseable: hide it whole
        try:
            split_hosts(hosts, default_port=None)
        except (InvalidURI, ConfigurationError, ValueError):  # "mongodb+srv://": no host at all
            return None
        path = slash + database
    else:
        try:
            split = urlsplit(f"{scheme}://{rest}")
            split.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            return None
        userinfo, at, hosts = split.netloc.rpartition("@")
        userinfo = userinfo if at else None
        path, query = split.path, split.query
    if not _SAFE_PATH.fullmatch(path) or any(c in hosts for c in " @") or "@" in query:
        return None
    return userinfo, hosts, path, query


def _query(query: str) -> str:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True,
                          separator=";" if "&" not in query and ";" in query else "&")
    except ValueError:
        return HIDDEN
    shown = []
    for key, value in pairs:
        if key.lower() in SAFE_PARAMETERS and _SAFE_VALUE.fullmatch(value):
            shown.append(f"{key}={value}")
        elif _SAFE_KEY.fullmatch(key):
            shown.append(f"{key}={HIDDEN}")
        else:
            shown.append(HIDDEN)
    return "&".join(shown)


def secrets_of(url: str | None) -> list[str]:
    """The secrets ``url`` carries (its password, its unsafe parameters' values), as written and decoded."""
    if not url or "://" not in url:
        return []
    rest = url.partition("://")[2]
    password = rest.rpartition("@")[0].partition(":")[2]
    # a driver that split the URL elsewhere quotes a piece of it: hide every piece too
    found = [password, *re.split(r"[@/:?#\s]+", password)] if password else []
    query = rest.partition("?")[2]
    for item in re.split("[&;]", query):
        key, eq, value = item.partition("=")
        if eq and key.lower() not in SAFE_PARAMETERS and value:
            found.append(value)
    return sorted({s for f in found for s in (f, unquote(f)) if len(s) >= 3}, key=len, reverse=True)


_known_urls: tuple[str, ...] = ()


def remember(*urls: str | None) -> None:
    """The URLs whose secrets ``redact_text`` hides by default (``proc.config`` hands in the
    configured database and broker each time the settings change)."""
    global _known_urls
    _known_urls = tuple(u for u in urls if u)


def redact_text(text: str | None, urls=None) -> str:
    """``text`` with the secrets of ``urls`` (default: the remembered ones, the configured
    database and broker) and of every URL-like word in it hidden."""
    if not text:
        return ""
    text = str(text)
    for url in _known_urls if urls is None else urls:
        for secret in secrets_of(url):
            text = text.replace(secret, HIDDEN)
    return _URL_WORD.sub(_redact_word, text)


def _redact_word(match) -> str:
    word = match.group(0)
    kept = word.rstrip(_TRAILING)
    return redact_url(kept) + word[len(kept):]
