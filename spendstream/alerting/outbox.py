"""The outbox's bookkeeping: one delivery state per (destination, alert), so each destination
keeps its own schedule.

The ``alerts`` table holds what must be delivered; ``alert_deliveries`` holds, per
destination, dedup key and state, where its delivery stands: ``pending`` (with
``attempts`` and ``next_attempt_at``) while it is retried, then ``delivered`` or
``failed`` for good. No row means never tried: due now. Rows are only appended; under
FINAL the newest (``delivered_at`` is the row's version) wins. ``detail`` holds the last
error, already redacted (:mod:`spendstream.alerting.redact`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from spendstream.alerting.attempt import Attempt
from spendstream.emitter.backoff import backoff_s
from spendstream.schemas.alert import Alert
from spendstream.sinks.store import Store, query_result, sql_time

DeliveryKey = tuple[str, str, str]  # destination, dedup key, alert state
Outcome = Literal["pending", "delivered", "failed"]
_DETAIL_CHARS = 500
_ROWS_PER_INSERT = 200  # parameters per statement stay few; one pass rarely settles more
# The table keeps milliseconds: a jittered wait under one would be stored as "due now" and the
# same instant's next pass would send again. Every retry waits at least this long.
_MIN_WAIT = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a delivery that may succeed later is tried again, and when it is given up.

    The next attempt waits what ``Retry-After`` asked (at most ``max_retry_after_s``), else a
    jittered exponential backoff from ``backoff_base_s`` up to ``backoff_cap_s``. A delivery whose
    next attempt would fall more than ``give_up_after_s`` after its first is marked failed.
    """

    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    max_retry_after_s: float = 3600.0
    give_up_after_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """Where the delivery of one alert to one destination stands."""

    outcome: Outcome
    attempts: int
    first_attempt_at: datetime | None
    next_attempt_at: datetime | None
    detail: str

    def due(self, now: datetime) -> bool:
        return self.outcome == "pending" and (self.next_attempt_at is None or self.next_attempt_at <= now)


def after_attempt(previous: DeliveryState | None, attempt: Attempt, *, now: datetime, policy: RetryPolicy,
                  rng: random.Random | None = None) -> DeliveryState:
    """The state a delivery moves to after ``attempt`` (pure: no I/O, ``now`` given)."""
    attempts = (previous.attempts if previous else 0) + 1
    first = previous.first_attempt_at if previous and previous.first_attempt_at else now
    if attempt.result == "delivered":
        return DeliveryState("delivered", attempts, first, None, "")
    if attempt.result == "refused":
        return DeliveryState("failed", attempts, first, None, attempt.reason)
    if attempt.retry_after_s is not None:
        wait_s = min(attempt.retry_after_s, policy.max_retry_after_s)
    else:
        wait_s = backoff_s(attempts - 1, base_s=policy.backoff_base_s, cap_s=policy.backoff_cap_s, rng=rng)
    next_at = now + max(timedelta(seconds=wait_s), _MIN_WAIT)
    if (next_at - first).total_seconds() > policy.give_up_after_s:
        return DeliveryState("failed", attempts, first, None,
                             f"gave up after {attempts} attempts over {_duration(now - first)}: {attempt.reason}")
    return DeliveryState("pending", attempts, first, next_at, attempt.reason)


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def load_alerts(store: Store) -> list[Alert]:
    """Every stored alert (state change) to deliver, oldest first: not those stored as part of another incident
    (``correlated_with``), which its root's message names."""
    rows = query_result(store, """
        SELECT kind, severity, state, subject, window_start, window_end, observed, expected, dedup_key, message,
               created_at
        FROM alerts FINAL WHERE correlated_with = ''
        ORDER BY created_at, dedup_key, state""").dicts()
    for row in rows:
        for name in ("window_start", "window_end", "created_at"):
            row[name] = _utc(row[name])
    return [Alert.model_validate(r) for r in rows]


def load_states(store: Store) -> dict[DeliveryKey, DeliveryState]:
    """The latest delivery state of every (destination, dedup key, alert state) ever tried."""
    rows = query_result(store, """
        SELECT destination, dedup_key, state, outcome, attempts, first_attempt_at, next_attempt_at, detail
        FROM alert_deliveries FINAL""").rows
    return {(d, k, s): DeliveryState(outcome, int(attempts), _utc(first), _utc(next_at), detail)
            for d, k, s, outcome, attempts, first, next_at, detail in rows}


def settled_keys(store: Store, keys: Sequence[DeliveryKey]) -> set[DeliveryKey]:
    """Those of ``keys`` whose delivery is settled (delivered or failed) as the table has it now.

    A runner about to record a retry asks first: another runner (a new leader, while this one
    was stalled) may have settled the delivery since this one read its state, and the newest
    row wins, so a late ``pending`` would reopen it and send the alert once more. Checking,
    then appending is not atomic; it narrows that race from a whole pass to one query."""
    found: set[DeliveryKey] = set()
    for chunk in range(0, len(keys), _ROWS_PER_INSERT):
        part = keys[chunk:chunk + _ROWS_PER_INSERT]
        where = " OR ".join(f"(destination = {{d{i}:String}} AND dedup_key = {{k{i}:String}} "
                            f"AND state = {{s{i}:String}})" for i in range(len(part)))
        params = {f"{n}{i}": v for i, key in enumerate(part) for n, v in zip("dks", key, strict=True)}
        rows = query_result(store, f"SELECT destination, dedup_key, state FROM alert_deliveries FINAL "
                                   f"WHERE outcome != 'pending' AND ({where})", params).rows
        found.update((d, k, st) for d, k, st in rows)
    return found


def record_states(store: Store, states: Sequence[tuple[DeliveryKey, DeliveryState]], *, now: datetime) -> None:
    """Append ``states``; each becomes the current state of its delivery.

    Plain parameterised INSERTs: they also pass through a running worker's query
    endpoint, which serves statements but not Arrow inserts."""
    for chunk in range(0, len(states), _ROWS_PER_INSERT):
        values, params = [], {"now": sql_time(now)}
        for i, ((destination, dedup_key, state), s) in enumerate(states[chunk:chunk + _ROWS_PER_INSERT]):
            values.append(f"({{d{i}:String}}, {{k{i}:String}}, {{s{i}:String}}, {{o{i}:String}}, {{a{i}:UInt32}}, "
                          f"{{f{i}:Nullable(DateTime64(3, 'UTC'))}}, {{n{i}:Nullable(DateTime64(3, 'UTC'))}}, "
                          f"{{x{i}:String}}, {{now:DateTime64(3, 'UTC')}})")
            params |= {f"d{i}": destination, f"k{i}": dedup_key, f"s{i}": state, f"o{i}": s.outcome,
                       f"a{i}": s.attempts, f"f{i}": _param_time(s.first_attempt_at),
                       f"n{i}": _param_time(s.next_attempt_at), f"x{i}": s.detail[:_DETAIL_CHARS]}
        store.query_text("INSERT INTO alert_deliveries (destination, dedup_key, state, outcome, attempts, "
                         "first_attempt_at, next_attempt_at, detail, delivered_at) VALUES " + ", ".join(values),
                         params, fmt="CSV")


def _param_time(at: datetime | None) -> str:
    return "\\N" if at is None else sql_time(at)


def _utc(value: str | None) -> datetime | None:
    # ClickHouse gives DateTime64(3, 'UTC') without its zone.
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


def messages_sent(store: Store, *, since: datetime) -> dict[str, int]:
    """Messages each (digested) destination was sent since ``since``: what its hourly budget has left."""
    rows = query_result(store, "SELECT destination, toUInt32(count()) FROM alert_messages "
                               "WHERE sent_at >= {s:DateTime64(3, 'UTC')} GROUP BY destination",
                        {"s": sql_time(since)}).rows
    return {d: int(n) for d, n in rows}


def record_messages(store: Store, messages: Sequence[tuple[str, int]], *, now: datetime) -> None:
    """One row per message delivered: (destination, alerts in it)."""
    if not messages:
        return
    values = ", ".join(f"({{d{i}:String}}, {{n{i}:UInt32}}, {{now:DateTime64(3, 'UTC')}})"
                       for i in range(len(messages)))
    params = {"now": sql_time(now)} | {f"d{i}": d for i, (d, _) in enumerate(messages)} | {
        f"n{i}": n for i, (_, n) in enumerate(messages)}
    store.query_text(f"INSERT INTO alert_messages (destination, alerts, sent_at) VALUES {values}", params, fmt="CSV")
