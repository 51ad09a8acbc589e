"""Exact windows for detectors: whole periods from a rollup, the partial periods at a window's edges from raw.

A rollup answers whole periods (a minute, an hour). A detector's window starts and
ends where ``now`` puts it, mid-minute as a rule. The partial periods at its edges
are read from raw ``usage_events FINAL`` rather than the window being aligned to the
grain: aligning would change which events a detector sees (its answers must stay
those of raw ``FINAL``, issue 17), while an edge is less than one period of a table
sorted by time, so reading it costs what it holds. The whole periods come from the
rollup before its watermark and from raw after it (the same raw read as the edges), so
the answer is exact while the rollup lags or a late event reopens an old period.

Windows are given with the same ``DateTime64(3)`` bounds the raw queries used
(:func:`~spendstream.sinks.store.sql_time`: an instant truncated to the millisecond).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
             where: str = "1", marks: Mapping[str, datetime] | None = None, by_period: bool = False
             ) -> tuple[str, dict[str, str]]:
    """A subquery answering ``measures`` per window and rollup keys, and its query parameters.

    Columns: ``w`` (the index of the window in ``windows``), with ``by_period`` ``period`` (the rollup's period a
    row falls in: a partial period at an edge is its period's part inside the window), the keys of ``rollup``, and
    the measures as mergeable columns in ``rollups.MEASURES`` order (group them with
    each ``Measure.of_rollup``: a (window, keys) pair may span several rows). A row is
    counted in every window it falls in. ``where`` filters rollup and raw rows alike by
    key columns (by name); ``name`` prefixes the parameters, so that several of these
    can share one query.

    Two reads: the rollup's whole periods before its watermark (computed once, ``WITH``),
    and raw ``usage_events FINAL`` once for everything else — the partial periods at the
    edges and the whole periods from the watermark on — with the rollup's own filter
    (``Rollup.where``: a feature rollup has no row for an event without a feature). ``marks``: the
    watermarks of a pass (``rollups.watermarks``), computed once for all its reads; else computed here.

    The rollup's conditions are a ``PREWHERE``: they name its sort key's columns only (the period, and the
    keys ``where`` filters by), which every version of a row shares, so filtering before ``FINAL`` merges
    the versions is exact, and it merges only the rows asked for (a few customers' hours of ``customer_hours``,
    not every customer's). Raw's filters stay a ``WHERE``: they are not ``usage_events``' sort key.
    """
    if rollup.having != "1":
        raise ValueError(f"{rollup.name} keeps only some groups of a period: a partial period is another question")
    if not 0 < len(windows) <= MAX_WINDOWS:
        raise ValueError(f"between 1 and {MAX_WINDOWS} windows, not {len(windows)}")
    wanted = [m for m in rollups.MEASURES if m.name in measures]
    if len(wanted) != len(set(measures)):
        raise ValueError(f"unknown measures: {sorted(set(measures) - {m.name for m in wanted})}")
    params: dict[str, str] = {}
    wm = f"{name}_wm"

    def between(column: str, key: str, a: datetime, b: datetime | None) -> str:
        params[f"{name}_{key}a"] = sql_time(a)
        cond = f"{column} >= {{{name}_{key}a:DateTime64(3, 'UTC')}}"
        if b is not None:
            params[f"{name}_{key}b"] = sql_time(b)
            cond += f" AND {column} < {{{name}_{key}b:DateTime64(3, 'UTC')}}"
        return f"({cond})"

    on_rollup: list[tuple[int, str]] = []  # (window, condition on the rollup's period)
    on_raw: list[tuple[int, str]] = []     # (window, condition on ts)
    for w, window in enumerate(windows):
        inner, outer = split(window, rollup.step)
        conds = [between("ts", f"e{w}_{k}", a, b) for k, (a, b) in enumerate(outer)]
        if inner:
            # whole periods: aligned bounds, so one condition reads the same on the rollup's period and on `ts`
            on_rollup.append((w, f"{between(rollup.period, f'p{w}', *inner)} AND {rollup.period} < {wm}"))
            conds.append(f"{between('ts', f'p{w}', *inner)} AND ts >= {wm}")
        if conds:
            on_raw.append((w, " OR ".join(f"({c})" for c in conds)))
    keys = ", ".join(rollup.keys)
    rollup_keys, raw_keys = ((f"{rollup.period} AS period, {keys}", f"{rollup.bucket} AS period, {keys}") if by_period
                             else (keys, keys))
    names = ", ".join(m.name for m in wanted)
    parts = []
    if on_rollup:
        which, inside = _which(on_rollup)
        parts.append(f"SELECT arrayJoin({which}) AS w, {rollup_keys}, {names} FROM {rollup.name} FINAL "
                     f"PREWHERE ({inside}) AND ({where})")
    if on_raw or not on_rollup:  # (only empty windows: a subquery with the columns and no rows)
        which, inside = _which(on_raw)
        parts.append(f"SELECT arrayJoin(ws) AS w, {'period, ' if by_period else ''}{keys}, {names} FROM ("
                     f"SELECT {which} AS ws, {raw_keys}, {', '.join(f'{m.of_raw} AS {m.name}' for m in wanted)} "
                     f"FROM usage_events FINAL WHERE ({inside}) AND ({where}) AND ({rollup.where}) "
                     f"GROUP BY ws, {'period, ' if by_period else ''}{keys})")
    return (f"(WITH ({rollups.watermark_of(rollup, marks)}) AS {wm} "
            f"SELECT * FROM ({' UNION ALL '.join(parts)}))"), params


def _which(conds: Sequence[tuple[int, str]]) -> tuple[str, str]:
    """(the indexes whose condition a row meets, as an array; whether it meets any) for ``(index, condition)``s."""
    if not conds:
        return "CAST([], 'Array(UInt8)')", "0"
    which = (f"arrayFilter((_w, _in) -> _in, CAST([{', '.join(str(w) for w, _ in conds)}], 'Array(UInt8)'), "
             f"[{', '.join(f'({c})' for _, c in conds)}])")
    return which, " OR ".join(f"({c})" for _, c in conds)


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


@dataclass(frozen=True, slots=True)
class Ask:
    """One window of one scope, to be read through ``layers`` (coarsest first: days, then hours), then raw.

    ``where`` filters by key columns every layer has (by name). Every layer's period must hold whole
    periods of the next one, and every layer must roll up every raw row (``Rollup.where`` is ``1``).
    """

    window: Window
    layers: tuple[rollups.Rollup, ...]
    where: str = "1"


def layered(asks: Sequence[Ask], measures: Sequence[str], *, name: str,
            marks: Mapping[str, datetime] | None = None) -> tuple[str, dict[str, str]]:
    """A subquery answering summable ``measures`` per ask (column ``w``, its index in ``asks``), and its parameters.

    Each instant of an ask's window is read from the coarsest layer that holds it whole and before that
    layer's watermark, else from raw: a month's closed days from a day rollup, the days after its
    watermark (today, a day a late event reopened) from an hour rollup, the partial hours at the
    window's ends and the hours after the hour rollup's watermark from raw ``usage_events FINAL``. Every
    instant is read exactly once, so the answer is raw ``FINAL``'s to the last digit. One read per table
    for all asks, each a set of primary-key ranges, and each watermark computed once (``WITH``). Rows
    are mergeable: sum them per ``w``. ``marks``: watermarks computed beforehand (``rollups.watermarks``).
    A layer's conditions are a ``PREWHERE``, as in :func:`windowed` (``where`` names key columns only).
    """
    if not asks:
        raise ValueError("no asks")
    if len(asks) > MAX_WINDOWS:
        raise ValueError(f"at most {MAX_WINDOWS} asks, not {len(asks)}")
    for ask in asks:
        if ask.window.end is None:
            raise ValueError("a layered window ends")
        for layer in ask.layers:
            if layer.where != "1" or layer.having != "1":
                raise ValueError(f"{layer.name} does not roll up every event: it cannot stand for raw")
            sums = {m.name for m in layer.measures if m.of_rollup == f"sum({m.name})"}
            if not set(measures) <= sums:
                raise ValueError(f"{layer.name} has no summable {sorted(set(measures) - sums)}")
        for coarse, fine in zip(ask.layers, ask.layers[1:], strict=False):
            if coarse.step <= fine.step or coarse.step % fine.step:
                raise ValueError(f"{coarse.name}'s periods are not whole periods of {fine.name}'s")
    params: dict[str, str] = {}
    wms = {layer.name: f"{name}_wm_{layer.name}" for ask in asks for layer in ask.layers}
    by_table: dict[str, list[tuple[int, str]]] = {}
    on_raw: list[tuple[int, str]] = []

    def at(value: datetime, key: str) -> str:
        params[f"{name}_{key}"] = sql_time(value)
        return f"{{{name}_{key}:DateTime64(3, 'UTC')}}"

    for w, ask in enumerate(asks):
        start, end = _millisecond(ask.window.start), _millisecond(ask.window.end)  # type: ignore[arg-type]
        covered: list[Callable[[str], str]] = []  # each coarser layer's read periods, as a condition on a column
        for i, layer in enumerate(ask.layers):
            inner, _ = split(Window(start, end), layer.step)
            if inner is None:
                continue
            held = _held(at(inner[0], f"{w}_{i}a"), at(inner[1], f"{w}_{i}b"), wms[layer.name])  # type: ignore[arg-type]
            cond = [held(layer.period), *(f"NOT ({coarser(layer.period)})" for coarser in covered), f"({ask.where})"]
            by_table.setdefault(layer.name, []).append((w, " AND ".join(cond)))
            covered.append(held)
        on_raw.append((w, " AND ".join([f"ts >= {at(start, f'{w}_s')}", f"ts < {at(end, f'{w}_e')}",
                                        *(f"NOT ({held('ts')})" for held in covered), f"({ask.where})"])))
    names = ", ".join(measures)
    parts = []
    for table, conds in by_table.items():
        which, inside = _which(conds)
        parts.append(f"SELECT w, {', '.join(f'sum({m}) AS {m}' for m in measures)} FROM ("
                     f"SELECT arrayJoin({which}) AS w, {names} FROM {table} FINAL PREWHERE {inside}) GROUP BY w")
    which, inside = _which(on_raw)
    of_raw = {m.name: m.of_raw for m in rollups.MEASURES}
    parts.append(f"SELECT arrayJoin(ws) AS w, {names} FROM (SELECT {which} AS ws, "
                 f"{', '.join(f'{of_raw[m]} AS {m}' for m in measures)} FROM usage_events FINAL "
                 f"WHERE {inside} GROUP BY ws)")
    layers = {layer.name: layer for ask in asks for layer in ask.layers}
    cuts = ", ".join(f"({rollups.watermark_of(layer, marks)}) AS {wms[n]}" for n, layer in layers.items())
    return f"({'WITH ' + cuts + ' ' if cuts else ''}SELECT * FROM ({' UNION ALL '.join(parts)}))", params


def _held(first: str, last: str, wm: str) -> Callable[[str], str]:
    """The condition "a layer holds this instant": its whole periods from ``first`` to ``last``, before ``wm``."""
    return lambda column: f"({column} >= {first} AND {column} < least({last}, {wm}))"
