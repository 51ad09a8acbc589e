"""Delivering alerts: each destination on its own schedule, a pass bounded in time, an outbox.

The ``alerts`` table is the outbox: detectors store an alert before anything is
sent, and :class:`Notifier` delivers what each destination has not yet settled,
keeping one delivery state per (destination, alert) in ``alert_deliveries``
(:mod:`spendstream.alerting.outbox`). A receiver that is down only delays its own
deliveries; nothing is lost, and a restart resumes where it stopped.

One pass (:meth:`Notifier.run_pass`) tries every due delivery at most once and never
sleeps waiting for a destination: destinations are served side by side, each
request is bounded by ``request_timeout_s`` and the whole pass by
``pass_deadline_s``. A retryable failure schedules that delivery's next attempt
(backoff, ``Retry-After``); once a destination fails that way its other deliveries
wait for a later pass instead of each costing a timeout now. A refusal (another
4xx, a URL that cannot work) marks the delivery failed with its redacted reason.
Per destination: at most ``max_per_minute`` messages a minute (the rest wait for a
later pass); alerts of one kind and state due together go out as one message with
a count, and beyond the destination's ``max_per_hour`` everything due goes as one
digest (:mod:`spendstream.alerting.digest`; PagerDuty gets one event per dedup key,
as it expects). A resolve goes wherever its trigger went.

Each outcome is recorded as soon as its request returns, not at the end of the pass:
a process that dies between a receiver's answer and that record sends the alert
again from its next pass (or the next leader's), so the window is kept to one
request and one insert. ``may_send`` is asked before every request: a worker that
stops leading its group stops sending at once (its deliveries stay pending).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spendstream.alerting import digest
from spendstream.alerting.attempt import Attempt, post
from spendstream.alerting.destinations import Destination, Request
from spendstream.alerting.outbox import (
    DeliveryKey,
    DeliveryState,
    RetryPolicy,
    after_attempt,
    load_alerts,
    load_states,
    messages_sent,
    record_messages,
    record_states,
    settled_keys,
)
from spendstream.configfile import load_model
from spendstream.schemas.alert import Alert, Severity
from spendstream.sinks.store import Store, query_result, sql_time

log = logging.getLogger(__name__)

_SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}
# How long a pass waits past its deadline for requests to notice it (their timeouts are
# cut to the deadline, but DNS lookups and slow-dripping receivers ignore those).
_JOIN_GRACE_S = 1.0


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

    @model_validator(mode="after")
    def _routes_name_destinations(self) -> AlertRouting:
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
        unknown = sorted({r.destination for r in self.routes} - set(names))
        if unknown:  # a route to nowhere would drop its alerts without a word
            raise ValueError(f"routes name destinations that are not defined: {unknown}")
        return self


def load_routing(path: str | Path | None) -> AlertRouting:
    if path is None:
        return AlertRouting()
    parsed, _ = load_model(Path(path), AlertRouting, "alert routes file")
    return parsed or AlertRouting()


@dataclass
class RateLimit:
    per_minute: int
    sent: list[float] = field(default_factory=list)

    def full(self, now: float) -> bool:
        self.sent = [t for t in self.sent if now - t < 60]
        return len(self.sent) >= self.per_minute


@dataclass(frozen=True, slots=True)
class Batch:
    """One request and the alerts whose delivery it settles; no request when the destination cannot work."""

    request: Request | None
    alerts: tuple[Alert, ...]


@dataclass
class PassReport:
    """What one pass did, counted in (destination, alert) deliveries."""

    delivered: int = 0
    failed: int = 0      # refused or given up in this pass: not retried
    pending: int = 0     # still to deliver after this pass: retrying, not yet due, or not reached
    unfinished: int = 0  # requests still running at the deadline: result unknown, sent again later
    problems: dict[str, str] = field(default_factory=dict)  # destination -> its last (redacted) error
    # per destination: alerts delivered, failed for good, and failed but to be retried ("retrying")
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def exit_code(self) -> int:
        """0: nothing left to do; 1: a delivery failed for good in this pass; 75 (EX_TEMPFAIL): some pending."""
        return 1 if self.failed else 75 if self.pending else 0


DEFAULT_POLICY = RetryPolicy()


class Notifier:
    """Delivers every stored alert to the destinations its routes name, once per destination."""

    def __init__(self, store: Store, routing: AlertRouting, *, request_timeout_s: float = 10.0,
                 pass_deadline_s: float = 30.0, policy: RetryPolicy = DEFAULT_POLICY,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 may_send: Callable[[], bool] = lambda: True) -> None:
        self.store, self.routing, self.policy, self.clock = store, routing, policy, clock
        self.request_timeout_s, self.pass_deadline_s = request_timeout_s, pass_deadline_s
        self.may_send = may_send  # asked from the delivery threads before each request: must be thread-safe
        self._limits = {d.name: RateLimit(d.max_per_minute) for d in routing.destinations}
        self._busy: dict[str, threading.Thread] = {}  # destinations whose last pass overran its deadline

    def run_pass(self) -> PassReport:
        """Try each due delivery at most once, within ``pass_deadline_s`` (plus a short grace); record each
        outcome as it arrives."""
        report = PassReport()
        states = load_states(self.store)
        plans = self._plan(load_alerts(self.store), states, self.clock(), report)
        settled = 0

        def settle(finished: list[tuple[Destination, Batch, Attempt]]) -> None:
            nonlocal settled
            if not finished:
                return
            settled_at = self.clock()
            rows: list[tuple[DeliveryKey, DeliveryState]] = []
            for destination, batch, attempt in finished:
                outcomes = []
                for alert in batch.alerts:
                    key = (destination.name, alert.dedup_key, alert.state)
                    outcomes.append(after_attempt(states.get(key), attempt, now=settled_at, policy=self.policy))
                    rows.append((key, outcomes[-1]))
                _account(report, destination.name, attempt, outcomes, now=settled_at)
            record_messages(self.store, [(destination.name, len(batch.alerts)) for destination, batch, attempt
                                         in finished if attempt.result == "delivered"
                                         and destination.kind != "pagerduty"], now=settled_at)
            retrying = [key for key, state in rows if state.outcome == "pending"]
            done_elsewhere = settled_keys(self.store, retrying) if retrying else set()
            record_states(self.store, [(k, s) for k, s in rows if k not in done_elsewhere], now=settled_at)
            settled += len(rows)

        report.unfinished = self._send(plans, settle)
        # Due but not settled (rate limit, deadline, its destination failing, still in flight): due next pass.
        report.pending += sum(len(b.alerts) for _, batches in plans.values() for b in batches) - settled
        return report

    def _plan(self, alerts: list[Alert], states: dict[DeliveryKey, DeliveryState], now: datetime,
              report: PassReport) -> dict[str, tuple[Destination, list[Batch]]]:
        """The batches due now, per destination; counts what is pending but not due (or not sendable) in ``report``."""
        plans: dict[str, tuple[Destination, list[Batch]]] = {}
        triggers = {a.dedup_key: a for a in alerts if a.state == "firing"}
        sent = messages_sent(self.store, since=now - timedelta(hours=1))
        for destination in self.routing.destinations:
            routes = [r for r in self.routing.routes if r.destination == destination.name]
            due = []
            # a resolve goes wherever its trigger went, whatever its own severity
            for alert in (a for a in alerts if any(r.matches(digest.route_as(a, triggers)) for r in routes)):
                state = states.get((destination.name, alert.dedup_key, alert.state))
                if state is None or state.due(now):
                    due.append(alert)
                elif state.outcome == "pending":
                    report.pending += 1
            busy = self._busy.get(destination.name)
            if due and busy is not None and busy.is_alive():
                report.pending += len(due)  # its last request is still out: do not pile another on
            elif due:
                batches = _batches(destination, due, sent_last_hour=sent.get(destination.name, 0))
                held = len(due) - sum(len(b.alerts) for b in batches)
                report.pending += held  # over the destination's hourly budget: they go with a later digest
                if batches:
                    plans[destination.name] = (destination, batches)
        return plans

    def _send(self, plans: dict[str, tuple[Destination, list[Batch]]],
              settle: Callable[[list[tuple[Destination, Batch, Attempt]]], None]) -> int:
        """Send ``plans``, handing each outcome to ``settle`` (on this thread) as it arrives, until every
        destination is done or the deadline (plus a grace) passed; how many alerts were in requests still
        running then."""
        deadline = time.monotonic() + self.pass_deadline_s
        results = _Results()

        def send_to(destination: Destination, batches: list[Batch]) -> None:
            try:
                self._send_to(destination, batches, deadline, results)
            finally:
                results.done(destination.name)

        threads = {name: threading.Thread(target=send_to, args=(destination, batches),
                                          name=f"alert-delivery-{name}", daemon=True)
                   for name, (destination, batches) in plans.items()}
        for thread in threads.values():
            thread.start()
        while results.waiting_for(threads) and time.monotonic() < deadline + _JOIN_GRACE_S:
            results.wait(threads, timeout_s=deadline + _JOIN_GRACE_S - time.monotonic())
            settle(results.take())
        finished, in_flight, running = results.close(threads)
        settle(finished)
        for name in running:
            log.warning("alert delivery to %s still running after the pass deadline; its alerts stay pending "
                        "and may be sent twice", name)
        self._busy = {name: t for name, t in {**self._busy, **{n: threads[n] for n in running}}.items()
                      if t.is_alive()}
        return in_flight

    def _send_to(self, destination: Destination, batches: list[Batch], deadline: float, results: _Results) -> None:
        limit, redactor, problem = self._limits[destination.name], destination.redactor(), destination.problem()
        for batch in batches:
            if problem is not None or batch.request is None:  # unusable as configured: refused, nothing sent
                attempt = Attempt("refused", problem or "unusable as configured")
            else:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0 or limit.full(time.monotonic()) or not self.may_send():
                    return  # the rest of this destination's deliveries wait for a later pass (or leader)
                results.begin(destination.name, len(batch.alerts))
                attempt = post(batch.request, timeout_s=min(self.request_timeout_s, remaining_s), redactor=redactor)
                limit.sent.append(time.monotonic())
            if not results.add(destination, batch, attempt):
                return  # the pass is over: this outcome is not recorded, the alerts are tried again
            if attempt.result == "retry":
                return  # failing now: its other deliveries wait for a later pass instead of each costing a timeout


class _Results:
    """Outcomes handed from the delivery threads to the pass as they arrive; none are taken after it closed."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._items: list[tuple[Destination, Batch, Attempt]] = []
        self._in_flight: dict[str, int] = {}
        self._done: set[str] = set()  # destinations whose thread has finished
        self._closed = False

    def begin(self, destination: str, alerts: int) -> None:
        with self._changed:
            self._in_flight[destination] = alerts

    def add(self, destination: Destination, batch: Batch, attempt: Attempt) -> bool:
        with self._changed:
            if self._closed:
                return False
            self._items.append((destination, batch, attempt))
            self._in_flight.pop(destination.name, None)
            self._changed.notify_all()
            return True

    def done(self, destination: str) -> None:
        """``destination``'s thread has finished (perhaps without an outcome: rate limit, deadline, fenced)."""
        with self._changed:
            self._done.add(destination)
            self._changed.notify_all()

    def waiting_for(self, destinations: Iterable[str]) -> bool:
        with self._changed:
            return not self._done.issuperset(destinations)

    def wait(self, destinations: Iterable[str], *, timeout_s: float) -> None:
        """Until an outcome is there to take, every thread of ``destinations`` finished, or ``timeout_s`` passed."""
        names = set(destinations)
        with self._changed:
            self._changed.wait_for(lambda: self._items or self._done >= names, timeout=max(timeout_s, 0.0))

    def take(self) -> list[tuple[Destination, Batch, Attempt]]:
        """The outcomes that arrived since the last take."""
        with self._changed:
            items, self._items = self._items, []
            return items

    def close(self, destinations: Iterable[str]) -> tuple[list[tuple[Destination, Batch, Attempt]], int, list[str]]:
        """(the outcomes not yet taken, how many alerts are in requests still running, the destinations whose
        thread still runs); outcomes that arrive later are refused."""
        with self._changed:
            self._closed = True
            items, self._items = self._items, []
            return items, sum(self._in_flight.values()), sorted(set(destinations) - self._done)


def _account(report: PassReport, name: str, attempt: Attempt, outcomes: list[DeliveryState], *,
             now: datetime) -> None:
    if attempt.result == "delivered":
        report.delivered += len(outcomes)
        report.outcomes[name]["delivered"] += len(outcomes)
        return
    failed = sum(1 for s in outcomes if s.outcome == "failed")
    report.failed += failed
    report.pending += len(outcomes) - failed
    report.outcomes[name]["failed"] += failed
    report.outcomes[name]["retrying"] += len(outcomes) - failed
    first = outcomes[0]
    report.problems[name] = first.detail
    if failed:
        log.error("alert delivery to %s failed for good (%s); %d alert(s) marked failed, not retried", name,
                  first.detail, failed)
    else:
        wait_s = (first.next_attempt_at - now).total_seconds() if first.next_attempt_at else 0.0
        log.warning("alert delivery to %s failed (%s); %d alert(s) pending, attempt %d, next in %.1f s", name,
                    first.detail, len(outcomes), first.attempts, wait_s)


def _batches(destination: Destination, alerts: list[Alert], *, sent_last_hour: int) -> list[Batch]:
    groups = digest.group(alerts)
    if destination.problem() is not None:
        return [Batch(None, tuple(g)) for g in groups]
    if destination.kind == "pagerduty":
        return [Batch(r, (a,)) for g in groups for r, a in zip(destination.requests(g), g, strict=True)]
    messages = digest.plan(groups, sent_last_hour=sent_last_hour, max_per_hour=destination.max_per_hour)
    return [Batch(destination.requests(m)[0], tuple(m)) for m in messages]


def store_new_alerts(store: Store, alerts: Sequence[Alert]) -> int:
    """Insert the alerts whose (dedup key, state) the table does not hold yet, the triggers that escalate one
    it holds (same key, a worse severity) and those that detach one (it was stored as part of another incident,
    ``correlated_with``, and now speaks for itself); returns how many.

    An escalated trigger replaces the stored one (the table keeps the latest row per key and state), so the
    routes see the new severity: a destination that has delivered the trigger is not sent it again (its
    delivery is per key and state), one whose routes only take the worse severity gets it now, and the resolve
    goes wherever the escalated trigger went. A detached trigger replaces its stored, undelivered row: it is
    delivered now, and its resolve after it."""
    if not alerts:
        return 0
    new = []
    for a in alerts:
        held = query_result(store, "SELECT severity, correlated_with FROM alerts FINAL WHERE dedup_key = {k:String} "
                                   "AND state = {s:String}", {"k": a.dedup_key, "s": a.state}).rows
        if (not held or (a.state == "firing" and _SEVERITY_ORDER[a.severity] > _SEVERITY_ORDER[held[0][0]])
                or (a.state == "firing" and held[0][1] and not a.correlated_with)):
            new.append(a)
    for a in new:
        store.query_text(
            "INSERT INTO alerts (created_at, kind, severity, state, subject, window_start, window_end, observed, "
            "expected, dedup_key, message, correlated_with) VALUES ({c:DateTime64(3, 'UTC')}, {k:String}, "
            "{sv:String}, {st:String}, {sj:String}, {ws:DateTime64(3, 'UTC')}, {we:DateTime64(3, 'UTC')}, "
            "{o:Nullable(Decimal(38, 18))}, {e:Nullable(Decimal(38, 18))}, {d:String}, {m:String}, {cw:String})",
            {"c": sql_time(a.created_at), "k": a.kind, "sv": a.severity, "st": a.state, "sj": a.subject,
             "ws": sql_time(a.window_start), "we": sql_time(a.window_end),
             "o": str(a.observed) if a.observed is not None else "\\N",
             "e": str(a.expected) if a.expected is not None else "\\N", "d": a.dedup_key, "m": a.message,
             "cw": a.correlated_with or ""},
            fmt="CSV")
    return len(new)
