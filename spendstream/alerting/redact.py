"""Removing a destination's secrets from text before it is stored or logged.

A receiver's error body, or a network error's message, can echo what was sent:
the webhook URL's path and query (Slack's token lives there), a PagerDuty routing
key, an Authorization value. :class:`Redactor` replaces every known secret of one
destination (also URL-encoded, JSON-escaped, in any letter case) and, in case a
receiver echoes something in a shape we did not foresee, any URL's path and query,
bearer/basic credentials, ``key: value`` pairs whose key names a credential, and
Slack tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit

REDACTED = "[redacted]"

# Path segments and query values shorter than this cannot hold a credential worth
# the name, and redacting them (e.g. "in", "v2") would mangle ordinary words.
_MIN_PART_CHARS = 6

# Applied in this order: a bearer value first, so "Authorization: Bearer x" loses both words.
_GENERIC = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\b(authorization|proxy-authorization|token|access_token|api_key|apikey|routing_key"
                r"|integration_key|secret|password)([\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"), rf"\1\2{REDACTED}"),
    # Any URL keeps its scheme and host only (user:password@ and the path may be credentials).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,15}:(?://|\\/\\/))(?:[^@/\\\s\"'<>]*@)?([^/\\\s\"'<>?#]+)"
                r"((?:/|\\/|\?|#)[^\s\"'<>]*)?"),
     lambda m: m[1] + m[2] + (f"/{REDACTED}" if m[3] else "")),
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"), REDACTED),
)


class Redactor:
    """Replaces ``secrets`` (and the generic credential shapes above) in text with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants = {v for s in secrets if s for v in (s, quote(s, safe=""), s.replace("/", "\\/"))}
        # Longest first: a URL is replaced whole before its path could be, leaving no fragment behind.
        alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
        self._known = re.compile(alternatives, re.IGNORECASE) if alternatives else None
        self._secrets = tuple(variants)

    @classmethod
    def for_secrets(cls, *, urls: Iterable[str] = (), keys: Iterable[str] = ()) -> Redactor:
        """A redactor for URLs (whole, and every part that can carry a credential) and opaque keys."""
        secrets = list(keys)
        for url in urls:
            secrets.extend(url_secrets(url))
        return cls(secrets)

    def plus(self, secrets: Iterable[str]) -> Redactor:
        """This redactor, also removing ``secrets`` (e.g. one request's Authorization value)."""
        extra = [s for s in secrets if s]
        return Redactor((*self._secrets, *extra)) if extra else self

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced; the result is safe to store and to log."""
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        for pattern, replacement in _GENERIC:
            text = pattern.sub(replacement, text)
        return text


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may carry a credential: itself, its path and query, the longer path
    segments and query values, and any user:password."""
    parts = urlsplit(url)
    secrets = [url, parts.path, parts.query, parts.fragment, parts.username or "", parts.password or ""]
    if parts.query:
        secrets.append(f"{parts.path}?{parts.query}")
    secrets.extend(p for p in parts.path.split("/") if len(p) >= _MIN_PART_CHARS)
    secrets.extend(v for _, v in parse_qsl(parts.query, keep_blank_values=True) if len(v) >= _MIN_PART_CHARS)
    return [s for s in secrets if s and s != "/"]


def one_line(text: str, *, max_chars: int) -> str:
    """``text`` on one line, whitespace collapsed, at most ``max_chars`` (redact first, then shorten:
    a secret cut in half would no longer match)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…"
