"""One HTTP request to an alert destination, and whether trying again could help.

:func:`post` makes exactly one request, bounded by ``timeout_s``, and never sleeps
or retries: when to try again is decided per delivery by
:mod:`spendstream.alerting.outbox` from the :class:`Attempt` it returns.

Retryable, by allow-list: connection errors and timeouts, 429, 500, 502, 503 and
504 (500 too, because PagerDuty's Events API asks senders to retry it and Slack
answers it for passing trouble). Anything else is refused for good: another 4xx, a
redirect (following it would turn the POST into a GET, or send the alert where
nobody configured it), a URL that cannot work. Every reason is redacted here,
before it can be stored or logged.
"""

from __future__ import annotations

import http.client
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

from spendstream.alerting.destinations import Request, url_problem
from spendstream.alerting.redact import Redactor, one_line

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_SECRET_HEADERS = ("authorization", "proxy-authorization")
_BODY_READ_BYTES = 4096    # enough for any error message worth keeping
_REASON_CHARS = 300        # far fewer than a body read holds: no secret is cut before redaction


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one request achieved. ``reason`` is redacted; ``retry_after_s`` is what the receiver asked for."""

    result: Literal["delivered", "retry", "refused"]
    reason: str = ""
    retry_after_s: float | None = None


DELIVERED = Attempt("delivered")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(request: Request, *, timeout_s: float, redactor: Redactor) -> Attempt:
    """POST ``request`` once; never raises for anything the network or the receiver does."""
    redactor = redactor.plus(v for k, v in request.headers.items() if k.lower() in _SECRET_HEADERS)
    problem = url_problem(request.url)
    if problem is not None:
        return Attempt("refused", redactor.redact(problem))
    http_request = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")
    try:
        with _OPENER.open(http_request, timeout=timeout_s) as response:
            response.read(_BODY_READ_BYTES)
        return DELIVERED
    except urllib.error.HTTPError as exc:
        return _from_status(exc, redactor)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, OSError):  # refused, reset, timed out, name not resolved
            return Attempt("retry", _describe(exc.reason, redactor))
        return Attempt("refused", _describe(exc, redactor))
    except http.client.InvalidURL as exc:
        return Attempt("refused", _describe(exc, redactor))
    except (OSError, http.client.HTTPException) as exc:  # the connection broke while reading the answer
        return Attempt("retry", _describe(exc, redactor))
    except ValueError as exc:  # urllib's word for a URL it cannot use
        return Attempt("refused", _describe(exc, redactor))


def _from_status(exc: urllib.error.HTTPError, redactor: Redactor) -> Attempt:
    try:
        body = exc.read(_BODY_READ_BYTES).decode(errors="replace")
    except (OSError, http.client.HTTPException):
        body = ""
    reason = one_line(redactor.redact(f"HTTP {exc.code}: {body}" if body.strip() else f"HTTP {exc.code}"),
                      max_chars=_REASON_CHARS)
    if exc.code in RETRYABLE_STATUSES:
        return Attempt("retry", reason, retry_after_s(exc.headers.get("Retry-After")))
    if 300 <= exc.code < 400:
        reason = f"HTTP {exc.code}: redirects are not followed; configure the URL it redirects to"
    return Attempt("refused", reason)


def _describe(exc: BaseException, redactor: Redactor) -> str:
    return one_line(redactor.redact(f"{type(exc).__name__}: {exc}"), max_chars=_REASON_CHARS)


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or None if unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - (now or datetime.now(timezone.utc))).total_seconds(), 0.0)
