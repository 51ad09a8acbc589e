"""Exact windows for detectors: whole periods from a rollup, the partial periods at a window's edges from raw.

A rollup answers whole periods (a minute, an hour). A detector's window starts and
ends where ``now`` puts it, mid-minute as a rule. The partial periods at its edges
are read from raw ``usage_events FINAL`` rather than the window being aligned to the
grain: aligning would change which events a detector sees (its answers must stay
those of raw ``FINAL``, issue 17), while an edge is less than one period of a table
sorted by time, so reading it costs what it holds. The whole periods come from
:func:`spendstream.sinks.rollups.columns`, which itself reads raw after the rollup's
watermark, so the answer is exact while the rollup lags or a late event reopens an
old period.

Windows are given with the same ``DateTime64(3)`` bounds the raw queries used
(:func:`~spendstream.sinks.store.sql_time`: an instant truncated to the millisecond).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from spendstream.sinks import rollups
from spendstream.sinks.store import sql_time

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_WINDOWS = 255


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end)``; ``end=None`` is open (everything from ``start`` on, late and future rows included)."""

    start: datetime
    end: datetime | None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or (self.end is not None and self.end.tzinfo is None):
            raise ValueError(f"window bounds must be timezone-aware: {self}")


def windowed(rollup: rollups.Rollup, windows: Sequence[Window], measures: Sequence[str], *, name: str,
             where: str = "1") -> tuple[str, dict[str, str]]:
    """A subquery answering ``measures`` per window and rollup keys, and its query parameters.

    Columns: ``w`` (the index of the window in ``windows``), the keys of ``rollup``, and
    the measures as mergeable columns in ``rollups.MEASURES`` order (group them with
    each ``Measure.of_rollup``: a (window, keys) pair may span several rows). A row is
    counted in every window it falls in. ``where`` filters rollup and raw rows alike by
    key columns (by name); ``name`` prefixes the parameters, so that several of these
    can share one query.
    """
    if rollup.having != "1":
        raise ValueError(f"{rollup.name} keeps only some groups of a period: a partial period is another question")
    if not 0 < len(windows) <= MAX_WINDOWS:
        raise ValueError(f"between 1 and {MAX_WINDOWS} windows, not {len(windows)}")
    wanted = [m for m in rollups.MEASURES if m.name in measures]
    if len(wanted) != len(set(measures)):
        raise ValueError(f"unknown measures: {sorted(set(measures) - {m.name for m in wanted})}")
    params: dict[str, str] = {}

    def ranges(bounds: list[tuple[int, datetime, datetime | None]], column: str, kind: str) -> tuple[str, str]:
        """(the windows a row is in, as an array; whether it is in any), for ``column`` in these bounds."""
        conds = []
        for i, (_, a, b) in enumerate(bounds):
            params[f"{name}_{kind}{i}a"] = sql_time(a)
            cond = f"{column} >= {{{name}_{kind}{i}a:DateTime64(3, 'UTC')}}"
            if b is not None:
                params[f"{name}_{kind}{i}b"] = sql_time(b)
                cond += f" AND {column} < {{{name}_{kind}{i}b:DateTime64(3, 'UTC')}}"
            conds.append(f"({cond})")
        if not conds:
            return "CAST([], 'Array(UInt8)')", "0"
        which = (f"arrayFilter((_w, _in) -> _in, CAST([{', '.join(str(w) for w, _, _ in bounds)}], 'Array(UInt8)'), "
                 f"[{', '.join(conds)}])")
        return which, " OR ".join(conds)

    whole, edges = [], []
    for w, window in enumerate(windows):
        inner, outer = split(window, rollup.step)
        whole += [(w, *inner)] if inner else []
        edges += [(w, *edge) for edge in outer]
    keys = ", ".join(rollup.keys)
    parts = []
    if whole:
        # whole periods: aligned bounds, so one condition reads the same on the rollup's period and on `ts`
        which, inside = ranges(whole, "{t}", "p")
        inside = f"({inside}) AND ({where})"
        parts.append(f"SELECT arrayJoin(period) AS w, {keys}, {', '.join(m.name for m in wanted)} "
                     f"FROM {rollups.columns(rollup, which, measures, where_rollup=inside, where_raw=inside)}")
    if edges or not whole:  # (only empty windows: a subquery with the columns and no rows)
        which, inside = ranges(edges, "ts", "e")
        parts.append(f"SELECT arrayJoin(ws) AS w, {keys}, {', '.join(m.name for m in wanted)} FROM ("
                     f"SELECT {which} AS ws, {keys}, {', '.join(f'{m.of_raw} AS {m.name}' for m in wanted)} "
                     f"FROM usage_events FINAL WHERE ({inside}) AND ({where}) GROUP BY ws, {keys})")
    return f"({' UNION ALL '.join(parts)})", params


def split(window: Window, step: timedelta) -> tuple[tuple[datetime, datetime | None] | None,
                                                     list[tuple[datetime, datetime]]]:
    """The whole periods of ``window`` (or None), and the partial ones at its edges, at the bounds' millisecond."""
    start = _millisecond(window.start)
    end = _millisecond(window.end) if window.end is not None else None
    first = _floor(start, step) if _floor(start, step) == start else _floor(start, step) + step
    if end is None:
        return (first, None), [(start, first)] if first > start else []
    last = _floor(end, step)
    if first >= last:  # no whole period inside: all of it is an edge
        return None, [(start, end)] if end > start else []
    return (first, last), [(a, b) for a, b in ((start, first), (last, end)) if b > a]


def _millisecond(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _floor(at: datetime, step: timedelta) -> datetime:
    return at - (at - _EPOCH) % step
