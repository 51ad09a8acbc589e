"""Open incidents in ``detector_incidents``: what the state machine (:mod:`spendstream.detect.incidents`) remembers.

A restart, a new leader or ``spendstream notify --once`` in a fresh process continues the
same incidents: one row per change, the newest row of a (kind, subject) is its state,
``closed`` marks one resolved (or a pending one forgotten).

A detector can also keep a **mark** per subject: the last time something happened to it that outlives its
incidents (a retry storm's end: :func:`~spendstream.detect.storm.settled`). A mark is a row of the same table under
the mark's own name as its kind (state ``mark``, closed, ``opened_at`` the time marked), so the newest mark of a
subject is read in the same statement as the open incidents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

import pyarrow as pa

from spendstream.detect.incidents import Incident
from spendstream.sinks.store import Store, TextQuerier, query_result, sql_time

_TS = pa.timestamp("ms", tz="UTC")


def load_open(querier: TextQuerier, kinds: Iterable[str]) -> dict[tuple[str, str], Incident]:
    """The open (pending or firing) incidents of ``kinds``, by (kind, subject)."""
    return load(querier, kinds)[0]


def load(querier: TextQuerier, kinds: Iterable[str], *, marks: Mapping[str, datetime] | None = None
         ) -> tuple[dict[tuple[str, str], Incident], dict[tuple[str, str], datetime]]:
    """The open incidents of ``kinds``, by (kind, subject), and for each mark name in ``marks``, each subject's
    newest mark at or after the time given, by (name, subject): one read."""
    names, marked = list(kinds), dict(marks or {})
    params = {f"k{i}": k for i, k in enumerate(names)}
    where = [f"(kind IN ({', '.join(f'{{k{i}:String}}' for i in range(len(names)))}) AND closed = 0)"]
    for i, (name, since) in enumerate(marked.items()):
        params |= {f"m{i}": name, f"t{i}": sql_time(since)}
        where.append(f"(kind = {{m{i}:String}} AND state = 'mark' AND opened_at >= {{t{i}:DateTime64(3, 'UTC')}})")
    rows = query_result(querier, f"""
        SELECT kind, subject, state, toString(opened_at), severity, hot_passes, calm_passes, peak, wasted_usd, root
        FROM detector_incidents FINAL WHERE {' OR '.join(where)}""", params).rows
    incidents, at = {}, {}
    for kind, subject, state, opened, severity, hot, calm, peak, wasted, root in rows:
        opened_at = datetime.fromisoformat(opened).replace(tzinfo=timezone.utc)
        if state == "mark":
            at[(kind, subject)] = opened_at
        else:
            incidents[(kind, subject)] = Incident(kind, subject, state, opened_at, severity, int(hot), int(calm),
                                                  float(peak), float(wasted), root)
    return incidents, at


def save(store: Store, changes: list[tuple[tuple[str, str], Incident | None, Incident | None]], *,
         now: datetime, marks: Iterable[tuple[str, str]] = ()) -> None:
    """Record ``changes``: (key, before, after); ``after`` None closes ``before``. Unchanged ones are skipped.
    ``marks``: (mark name, subject) pairs to mark at ``now`` (read back by :func:`load`)."""
    rows: list[tuple[Incident, bool]] = []
    for _, before, after in changes:
        if after is None and before is not None:
            rows.append((before, True))
        elif after is not None and after != before:
            rows.append((after, False))
    rows += [(Incident(name, subject, "mark", now, "", hot_passes=0), True)  # type: ignore[arg-type]
             for name, subject in marks]
    if not rows:
        return
    # one Arrow insert: a VALUES statement of bound parameters cost ~1 ms of CPU a row in the engine (50 open
    # incidents stepped by one pass: ~50 ms), an Arrow block about the same for one row or fifty
    incidents = [incident for incident, _ in rows]
    store.insert_arrow("detector_incidents", pa.table({
        "kind": pa.array([i.kind for i in incidents], pa.string()),
        "subject": pa.array([i.subject for i in incidents], pa.string()),
        "state": pa.array([i.state for i in incidents], pa.string()),
        "closed": pa.array([int(closed) for _, closed in rows], pa.uint8()),
        "opened_at": pa.array([_millis(i.opened_at) for i in incidents], _TS),
        "severity": pa.array([i.severity for i in incidents], pa.string()),
        "hot_passes": pa.array([i.hot_passes for i in incidents], pa.uint32()),
        "calm_passes": pa.array([i.calm_passes for i in incidents], pa.uint32()),
        "peak": pa.array([float(i.peak) for i in incidents], pa.float64()),
        "wasted_usd": pa.array([float(i.wasted_usd) for i in incidents], pa.float64()),
        "root": pa.array([i.root for i in incidents], pa.string()),
        "updated_at": pa.array([_millis(now)] * len(rows), _TS)}))


def _millis(at: datetime) -> datetime:
    """``at`` in UTC to the millisecond, as ``sql_time`` hands a ``DateTime64(3)`` parameter."""
    at = at.astimezone(timezone.utc)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
