"""Delivering alerts: retries that respect the receiver, rate limits, grouping, and an outbox.

The ``alerts`` table is the outbox: detectors store an alert before anything is
sent, and :class:`Notifier` delivers what a destination has not yet acknowledged,
recording each success in ``alert_deliveries``. A receiver that is down only
delays delivery; nothing is lost, and a restart resumes where it stopped.

Per request: connection errors, timeouts, 429 (waiting as long as ``Retry-After``
says) and 5xx are retried with jittered backoff; any other 4xx is a permanent
failure (retrying a bad request cannot help), recorded with its status.
Per destination: at most ``max_per_minute`` messages a minute; alerts of one kind
and state due together go out as one message with a count (a storm of alerts
becomes one Slack message; PagerDuty gets one event per dedup key, as it expects).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spendstream.alerting.destinations import Destination, Request
from spendstream.configfile import load_model
from spendstream.emitter.backoff import backoff_s
from spendstream.schemas.alert import Alert, Severity
from spendstream.sinks.store import Store, query_result, sql_time

log = logging.getLogger(__name__)

_SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    destination: str
    kinds: list[str] | None = None        # None: every kind
    subjects: list[str] | None = None     # substrings of the subject, e.g. "team=search"
    min_severity: Severity = "info"

    def matches(self, alert: Alert) -> bool:
        return ((self.kinds is None or alert.kind in self.kinds)
                and (self.subjects is None or any(s in alert.subject for s in self.subjects))
                and _SEVERITY_ORDER[alert.severity] >= _SEVERITY_ORDER[self.min_severity])


class AlertRouting(BaseModel):
    """The alert routes file (``SPENDSTREAM_ALERT_ROUTES``)."""

    model_config = ConfigDict(extra="forbid")

    destinations: list[Destination] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)


def load_routing(path: str | Path | None) -> AlertRouting:
    if path is None:
        return AlertRouting()
    parsed, _ = load_model(Path(path), AlertRouting, "alert routes file")
    return parsed or AlertRouting()


Outcome = Literal["delivered", "failed"]


class PermanentFailure(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


@dataclass
class Sender:
    """Sends one request, retrying what can succeed later, for up to ``give_up_after_s``."""

    timeout_s: float = 10.0
    retry_base_s: float = 0.5
    retry_cap_s: float = 60.0
    give_up_after_s: float | None = None  # None: keep trying (the outbox waits)
    sleep: Callable[[float], None] = time.sleep
    attempts: int = 0

    def send(self, request: Request, destination: str) -> None:
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            self.attempts += 1
            wait: float | None = None
            try:
                http = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")
                with urllib.request.urlopen(http, timeout=self.timeout_s) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode(errors="replace")
                if exc.code == 429:
                    wait = _retry_after(exc.headers.get("Retry-After"))
                elif exc.code < 500:
                    raise PermanentFailure(exc.code, detail) from None
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                problem = type(getattr(exc, "reason", exc)).__name__  # never the URL: it may hold a secret
            delay = wait if wait is not None else backoff_s(attempt - 1, base_s=self.retry_base_s,
                                                             cap_s=self.retry_cap_s)
            if self.give_up_after_s is not None and time.monotonic() - started + delay > self.give_up_after_s:
                raise TimeoutError(f"{destination}: still failing after {attempt} attempts ({problem})")
            log.warning("alert delivery to %s failed (%s), attempt %d; retrying in %.1fs", destination, problem,
                        attempt, delay)
            self.sleep(delay)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


@dataclass
class RateLimit:
    per_minute: int
    sent: list[float] = field(default_factory=list)

    def wait_s(self, now: float) -> float:
        self.sent = [t for t in self.sent if now - t < 60]
        return 0.0 if len(self.sent) < self.per_minute else 60 - (now - self.sent[0])


@dataclass
class Notifier:
    """Delivers every stored alert to the destinations its routes name, exactly once per destination."""

    store: Store
    routing: AlertRouting
    sender: Sender = field(default_factory=Sender)
    clock: Callable[[], float] = time.monotonic
    _limits: dict[str, RateLimit] = field(default_factory=dict)

    def pending(self) -> list[tuple[Destination, list[Alert]]]:
        """(destination, alerts not yet delivered there), grouped by kind and state."""
        rows = query_result(self.store, """
            SELECT a.kind, a.severity, a.state, a.subject, a.window_start, a.window_end, a.observed, a.expected,
                   a.dedup_key, a.message, a.created_at
            FROM alerts AS a FINAL
            ORDER BY a.created_at, a.dedup_key, a.state""").dicts()
        done = {(r[0], r[1], r[2]) for r in query_result(
            self.store, "SELECT destination, dedup_key, state FROM alert_deliveries FINAL").rows}
        for row in rows:  # ClickHouse gives DateTime64(3, 'UTC') without its zone
            for name in ("window_start", "window_end", "created_at"):
                row[name] = datetime.fromisoformat(row[name]).replace(tzinfo=timezone.utc)
        alerts = [Alert.model_validate(r) for r in rows]
        by_name = {d.name: d for d in self.routing.destinations}
        out: list[tuple[Destination, list[Alert]]] = []
        for name, destination in by_name.items():
            routes = [r for r in self.routing.routes if r.destination == name]
            due = [a for a in alerts if any(r.matches(a) for r in routes)
                   and (name, a.dedup_key, a.state) not in done]
            groups: dict[tuple[str, str], list[Alert]] = defaultdict(list)
            for alert in due:
                groups[(alert.kind, alert.state)].append(alert)
            out.extend((destination, group) for group in groups.values())
        return out

    def deliver_once(self) -> int:
        """Deliver what is pending; returns how many alert deliveries were recorded."""
        recorded = 0
        for destination, alerts in self.pending():
            limit = self._limits.setdefault(destination.name, RateLimit(destination.max_per_minute))
            for request, covered in _requests(destination, alerts):
                wait = limit.wait_s(self.clock())
                if wait > 0:
                    self.sender.sleep(wait)
                try:
                    self.sender.send(request, destination.name)
                    outcome, detail = "delivered", ""
                except PermanentFailure as exc:
                    outcome, detail = "failed", str(exc)
                    log.error("alert delivery to %s refused (%s); not retried", destination.name, exc)
                limit.sent.append(self.clock())
                self._record(destination.name, covered, outcome, detail)
                recorded += len(covered)
        return recorded

    def _record(self, destination: str, alerts: Sequence[Alert], outcome: Outcome, detail: str) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        for alert in alerts:
            self.store.query_text(
                "INSERT INTO alert_deliveries (destination, dedup_key, state, outcome, detail, delivered_at) "
                "VALUES ({d:String}, {k:String}, {s:String}, {o:String}, {x:String}, {t:DateTime64(3, 'UTC')})",
                {"d": destination, "k": alert.dedup_key, "s": alert.state, "o": outcome, "x": detail[:500], "t": now},
                fmt="CSV")


def _requests(destination: Destination, alerts: list[Alert]) -> list[tuple[Request, list[Alert]]]:
    if destination.kind == "pagerduty":
        return [(r, [a]) for r, a in zip(destination.requests(alerts), alerts, strict=True)]
    return [(destination.requests(alerts)[0], alerts)]


def store_new_alerts(store: Store, alerts: Sequence[Alert]) -> int:
    """Insert the alerts whose (dedup key, state) the table does not hold yet; returns how many."""
    if not alerts:
        return 0
    new = [a for a in alerts if not query_result(
        store, "SELECT count() FROM alerts FINAL WHERE dedup_key = {k:String} AND state = {s:String}",
        {"k": a.dedup_key, "s": a.state}).scalar()]
    for a in new:
        store.query_text(
            "INSERT INTO alerts (created_at, kind, severity, state, subject, window_start, window_end, observed, "
            "expected, dedup_key, message) VALUES ({c:DateTime64(3, 'UTC')}, {k:String}, {sv:String}, {st:String}, "
            "{sj:String}, {ws:DateTime64(3, 'UTC')}, {we:DateTime64(3, 'UTC')}, {o:Nullable(Decimal(38, 18))}, "
            "{e:Nullable(Decimal(38, 18))}, {d:String}, {m:String})",
            {"c": sql_time(a.created_at), "k": a.kind, "sv": a.severity, "st": a.state, "sj": a.subject,
             "ws": sql_time(a.window_start), "we": sql_time(a.window_end),
             "o": str(a.observed) if a.observed is not None else "\\N",
             "e": str(a.expected) if a.expected is not None else "\\N", "d": a.dedup_key, "m": a.message},
            fmt="CSV")
    return len(new)

