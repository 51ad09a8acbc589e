"""How many messages a channel gets: grouping, a per-destination hourly budget, and a digest beyond it.

A Slack channel or webhook gets, per pass, one message per (kind, state) of the alerts due
(as before) while the destination's ``max_per_hour`` budget covers them; when it does not,
everything due goes as *one* digest message; when the hour's budget is spent, alerts wait
(pending) for the next pass with budget, and then go together. So no channel gets more than
``max_per_hour`` messages in any hour, whatever the load; resolves and digests count like any
message. The hour is on the alert cycle's clock: each message delivered is a row of
``alert_messages`` stamped with that clock, and rows expire by when they were written, so a
simulated or replayed clock weeks behind the wall's keeps its budget too. PagerDuty is not
digested: it gets one event per dedup key (an incident per subject, opened and resolved), as it
expects.

Routes: a resolve goes wherever its trigger went (:func:`route_as`), whatever its own
severity, so no destination keeps an incident open that another has closed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from spendstream.schemas.alert import Alert

DEFAULT_MAX_PER_HOUR = 4


def group(alerts: Sequence[Alert]) -> list[list[Alert]]:
    """Alerts by (kind, state), in the order they came."""
    groups: dict[tuple[str, str], list[Alert]] = defaultdict(list)
    for alert in alerts:
        groups[(alert.kind, alert.state)].append(alert)
    return list(groups.values())


def plan(groups: list[list[Alert]], *, sent_last_hour: int, max_per_hour: int) -> list[list[Alert]]:
    """The messages to send now: the groups while the hour's budget covers them, else one digest, else none."""
    left = max_per_hour - sent_last_hour
    if left <= 0 or not groups:
        return []
    if len(groups) <= left:
        return groups
    return [[a for g in groups for a in g]]


def route_as(alert: Alert, triggers: dict[str, Alert]) -> Alert:
    """What routes match ``alert`` as: a resolve as the trigger it resolves (same dedup key), anything else as
    itself."""
    return triggers.get(alert.dedup_key, alert) if alert.state == "resolved" else alert


def simulate(passes: Sequence[tuple[datetime, list[Alert]]], *, max_per_hour: int = DEFAULT_MAX_PER_HOUR) -> int:
    """Messages one digested destination sends for alerts arriving at these passes (oldest first), held alerts
    going out with a later pass: what ``bench/detector_eval`` counts for Slack."""
    sent: list[datetime] = []
    held: list[Alert] = []
    for at, arriving in passes:
        held += arriving
        recent = [t for t in sent if at - t < timedelta(hours=1)]
        messages = plan(group(held), sent_last_hour=len(recent), max_per_hour=max_per_hour)
        if messages:
            sent += [at] * len(messages)
            held = []
    return len(sent)
