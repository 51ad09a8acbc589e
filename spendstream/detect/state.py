"""Open incidents in ``detector_incidents``: what the state machine (:mod:`spendstream.detect.incidents`) remembers.

A restart, a new leader or ``spendstream notify --once`` in a fresh process continues the
same incidents: one row per change, the newest row of a (kind, subject) is its state,
``closed`` marks one resolved (or a pending one forgotten).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from spendstream.detect.incidents import Incident
from spendstream.sinks.store import Store, TextQuerier, query_result, sql_time

_ROWS_PER_INSERT = 200


def load_open(querier: TextQuerier, kinds: Iterable[str]) -> dict[tuple[str, str], Incident]:
    """The open (pending or firing) incidents of ``kinds``, by (kind, subject)."""
    names = list(kinds)
    params = {f"k{i}": k for i, k in enumerate(names)}
    rows = query_result(querier, f"""
        SELECT kind, subject, state, toString(opened_at), severity, hot_passes, calm_passes, peak, wasted_usd, root
        FROM detector_incidents FINAL
        WHERE kind IN ({', '.join(f'{{k{i}:String}}' for i in range(len(names)))}) AND closed = 0""", params).rows
    return {(kind, subject): Incident(kind, subject, state, datetime.fromisoformat(opened).replace(tzinfo=timezone.utc),
                                      severity, int(hot), int(calm), float(peak), float(wasted), root)
            for kind, subject, state, opened, severity, hot, calm, peak, wasted, root in rows}


def save(store: Store, changes: list[tuple[tuple[str, str], Incident | None, Incident | None]], *,
         now: datetime) -> None:
    """Record ``changes``: (key, before, after); ``after`` None closes ``before``. Unchanged ones are skipped."""
    rows: list[tuple[Incident, bool]] = []
    for _, before, after in changes:
        if after is None and before is not None:
            rows.append((before, True))
        elif after is not None and after != before:
            rows.append((after, False))
    for chunk in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[chunk:chunk + _ROWS_PER_INSERT]
        values, params = [], {"now": sql_time(now)}
        for i, (incident, closed) in enumerate(part):
            values.append(f"({{k{i}:String}}, {{s{i}:String}}, {{st{i}:String}}, {{c{i}:UInt8}}, "
                          f"{{o{i}:DateTime64(3, 'UTC')}}, {{sv{i}:String}}, {{h{i}:UInt32}}, {{cp{i}:UInt32}}, "
                          f"{{p{i}:Float64}}, {{w{i}:Float64}}, {{r{i}:String}}, {{now:DateTime64(3, 'UTC')}})")
            params |= {f"k{i}": incident.kind, f"s{i}": incident.subject, f"st{i}": incident.state,
                       f"c{i}": int(closed), f"o{i}": sql_time(incident.opened_at), f"sv{i}": incident.severity,
                       f"h{i}": incident.hot_passes, f"cp{i}": incident.calm_passes, f"p{i}": repr(incident.peak),
                       f"w{i}": repr(incident.wasted_usd), f"r{i}": incident.root}
        store.query_text("INSERT INTO detector_incidents (kind, subject, state, closed, opened_at, severity, "
                         "hot_passes, calm_passes, peak, wasted_usd, root, updated_at) VALUES " + ", ".join(values),
                         params, fmt="CSV")
