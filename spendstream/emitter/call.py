"""One model call as :mod:`spendstream.emitter.instrument` sees it: a request id and its HTTP attempts."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any


def status_of_http(code: int | None) -> str:
    """The UsageEvent status of an HTTP answer: 429 is ``rate_limited``, 408 and 504 ``timeout``."""
    if code is None or code < 400:
        return "ok"
    if code == 429:
        return "rate_limited"
    return "timeout" if code in (408, 504) else "error"


def status_of_exception(exc: BaseException) -> str:
    """``timeout`` for a timeout of any HTTP library (by class name, so none is imported), else ``error``."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    causes = {cls.__name__ for cls in type(exc.__cause__).__mro__} if exc.__cause__ is not None else set()
    timeouts = {"TimeoutError", "TimeoutException", "APITimeoutError", "ReadTimeout", "ConnectTimeout"}
    return "timeout" if (names | causes) & timeouts else "error"


class Attempt:
    """One HTTP attempt: when it started, and how it ended (status code, or an exception before any answer)."""

    __slots__ = ("started", "started_wall", "ended", "http_status", "status")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.started_wall = datetime.now(timezone.utc)
        self.ended: float | None = None
        self.http_status: int | None = None
        self.status = "ok"

    def answered(self, code: int | None) -> None:
        self.ended = time.perf_counter()
        self.http_status = code if isinstance(code, int) and 100 <= code <= 599 else None
        self.status = status_of_http(self.http_status)

    def failed(self, exc: BaseException) -> None:
        self.ended = time.perf_counter()
        self.status = status_of_exception(exc)

    def latency_ms(self) -> float | None:
        return (self.ended - self.started) * 1000 if self.ended is not None else None


class Call:
    """A logical call: its request body, whether it streams, a fresh ``request_id`` and the attempts so far."""

    def __init__(self, *, body: dict[str, Any], stream: bool) -> None:
        self.body = body
        self.stream = stream
        self.request_id = uuid.uuid4().hex
        self.attempts: list[Attempt] = []
        self.done = False  # its events were emitted
        self._started = Attempt()  # stands in when the HTTP client could not be hooked

    def attempt_started(self) -> Attempt:
        attempt = Attempt()
        self.attempts.append(attempt)
        return attempt

    def attempts_or_one(self) -> list[Attempt]:
        return self.attempts or [self._started]
