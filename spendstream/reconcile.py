"""``spendstream reconcile``: what emitters say they delivered, against what ClickHouse holds.

Per source (the events' ``service``) and minute of event time:

- **emitted**: the sum over emitters of each one's latest ledger count (distinct
  events it handed to Kafka and Kafka acknowledged);
- **stored**: distinct events in ``usage_events`` (read from the minute rollup, see
  ``stored_per_minute``);
- **dead-lettered**: distinct event ids in ``dead_letters`` whose raw JSON names that
  service and minute (they arrived, and are kept with their reason).

``gap = emitted − stored − dead-lettered``. A positive gap is events that reached
Kafka and are not in ClickHouse (still in flight, or lost); a negative one is
events stored that no emitter reported (services not using the emitter, or an
emitter whose report has not arrived yet). Events whose ``ts`` is unreadable are
not in any minute and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spendstream.sinks.ranges import between
from spendstream.sinks.rollups import MINUTES
from spendstream.sinks.store import QueryResult, TextQuerier, query_result, sql_time


@dataclass(frozen=True, slots=True)
class Interval:
    service: str
    minute: str
    emitted: int
    stored: int
    dead_lettered: int
    exact: bool

    @property
    def gap(self) -> int:
        return self.emitted - self.stored - self.dead_lettered


def stored_per_minute(querier: TextQuerier, params: dict[str, str]) -> QueryResult:
    """(service or '', minute as 'YYYY-MM-DD HH:MM', distinct events stored) for ``since <= ts < until``.

    From ``usage_minutes`` (its ``attempts`` are distinct stored events, ``service`` one of
    its keys); a range starting or ending inside a minute takes that part from raw.
    """
    rows = between(MINUTES, "{t}", ["attempts"], since="{since:DateTime64(3, 'UTC')}",
                   until="{until:DateTime64(3, 'UTC')}")
    return query_result(querier, f"SELECT ifNull(service, ''), formatDateTime(period, '%F %R'), sum(attempts) "
                                 f"FROM {rows} GROUP BY 1, 2", params)


def reconcile(querier: TextQuerier, since: datetime, until: datetime) -> list[Interval]:
    params = {"since": sql_time(since), "until": sql_time(until)}
    emitted = {(r[0], r[1]): (int(r[2]), bool(r[3])) for r in query_result(querier, """
        SELECT service, formatDateTime(minute, '%F %R'), sum(events), min(exact) FROM emitter_ledger FINAL
        WHERE minute >= {since:DateTime64(3, 'UTC')} AND minute < {until:DateTime64(3, 'UTC')}
        GROUP BY 1, 2""", params).rows}
    stored = {(r[0], r[1]): int(r[2]) for r in stored_per_minute(querier, params).rows}
    dead = {(r[0], r[1]): int(r[2]) for r in query_result(querier, """
        SELECT service, formatDateTime(minute, '%F %R'), uniqExact(event_id) FROM (
            SELECT JSONExtractString(raw, 'service') AS service, event_id,
                   toStartOfMinute(parseDateTime64BestEffortOrNull(JSONExtractString(raw, 'ts'), 3, 'UTC')) AS minute
            FROM dead_letters FINAL WHERE event_id IS NOT NULL)
        WHERE minute >= {since:DateTime64(3, 'UTC')} AND minute < {until:DateTime64(3, 'UTC')}
        GROUP BY 1, 2""", params).rows}
    keys = sorted(emitted.keys() | stored.keys() | dead.keys(), key=lambda k: (k[1], k[0]))
    return [Interval(service, minute, emitted.get((service, minute), (0, True))[0], stored.get((service, minute), 0),
                     dead.get((service, minute), 0), emitted.get((service, minute), (0, True))[1])
            for service, minute in keys]
