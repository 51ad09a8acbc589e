"""Copies of one event: identical ones are re-deliveries, different ones are conflicts.

The rule: **the first copy stored stands.** A later copy of an ``event_id`` with the
same content is a re-delivery and changes nothing; a later copy with other content
is a *conflict*: it is not applied, it is recorded in ``event_conflicts`` with where
both copies came from and which fields differ, and an ``event_conflict`` alert says
so. The writer asks this module before every insert of usage rows:

1. within the batch, the first copy of each id (in partition and offset order) is
   the candidate, later copies are compared with it;
2. against the store, the copies already stored whose ``ts`` lies within the dedup
   horizon of the batch's (``horizon_s``; 0 by default: the same ``ts``, which every
   re-delivery and re-send of an event object has) are looked up and compared.

Only the candidates that are new go on to ``usage_events``. Copies whose ``ts``
lies further apart than the horizon are different events; the lookup reads the
raw events of the batch's time range plus the horizon on each side (the table is
sorted by time), so the horizon is what a batch's check costs.

Two workers can store conflicting copies of a new id at the same moment, each check
running before the other's insert lands (the sender's copies went to two partitions).
The engine still keeps one copy (``precedence``: the earliest ``ingested_at``); so
that the other is recorded too, every writer looks again **after** its insert
(``recheck``): of the ids it just stored, any that now has stored copies with other
content gets its non-standing copies recorded. Whichever insert lands second, its
recheck sees both, so at least one writer records the conflict; both recording it
is harmless (``event_conflicts`` keeps one row per id and copy digest). A writer
killed between its insert and its recheck is covered by the check before insert:
it compares a re-delivered batch with *every* stored copy, not only the standing one.
A conflicting copy found this way sits in ``usage_events`` beside the one that stands
until a background merge collapses them; ``FINAL`` (every reader) sees only the standing
one. The gap that remains: a merge collapsing them before the recheck (milliseconds
after the insert) or before a killed writer's re-delivery leaves that copy unrecorded.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.batches import EVENT_COLUMNS, OTHER
from spendstream.sinks.rows import MONEY, TS, raw_digest
from spendstream.sinks.store import Store, sql_time

# What an event says: its copies are the same event when all of these agree. Prices are
# not compared (a catalog upgrade between two deliveries must not make them conflict),
# nor where the copy came from or when it was stored.
COMPARED: tuple[str, ...] = tuple(name for name, _ in EVENT_COLUMNS) + ("tags",)
SOURCE = ("source_topic", "source_partition", "source_offset")

CONFLICT_SCHEMA = pa.schema([
    ("detected_at", TS), ("event_id", pa.string()), ("ts", TS), ("stored_ts", TS), ("differs", pa.list_(pa.string())),
    ("source_topic", pa.string()), ("source_partition", pa.uint32()), ("source_offset", pa.uint64()),
    ("stored_source_topic", pa.string()), ("stored_source_partition", pa.uint32()),
    ("stored_source_offset", pa.uint64()), ("copy_total_cost", MONEY), ("stored_total_cost", MONEY),
    ("copy", pa.string()), ("copy_digest", pa.uint64()),
])


@dataclass(frozen=True, slots=True)
class Resolution:
    """A batch's usage rows split into what to store and what conflicts with what is stored."""

    rows: pa.Table           # copies not stored before: the rows to insert
    conflicts: pa.Table      # CONFLICT_SCHEMA: one row per conflicting copy (not applied)
    redelivered: int         # identical copies of stored or earlier events, dropped
    lookup: _Lookup | None   # where this batch's ids were looked up, for ``recheck``


@dataclass(frozen=True, slots=True)
class _Lookup:
    probe: int               # this batch's ids in event_id_probes
    since: str               # the batch's ts range widened by the horizon, as query parameters
    until: str
    by_ts: bool


def resolve(store: Store, rows: pa.Table, *, horizon_s: float, now: datetime | None = None) -> Resolution:
    """Split ``rows`` (``usage_events`` columns, in source order) by the first-copy rule."""
    now = now or datetime.now(timezone.utc)
    by_ts = horizon_s == 0  # then a copy is the same event only with the same ts, in the batch and in the store
    rows, conflicts, redelivered = _first_copies_and_conflicts(rows, by_ts, now)
    if rows.num_rows == 0:
        return Resolution(rows=rows, conflicts=conflicts, redelivered=redelivered, lookup=None)
    lookup = _look_up(store, rows, horizon_s, by_ts)
    # Every stored copy, oldest first: the first stands; any other with other content is a
    # conflict a writer killed before its recheck left unrecorded.
    standing, among_stored, _ = _first_copies_and_conflicts(_stored_copies(store, lookup), by_ts, now)
    found = [conflicts, among_stored]
    if standing.num_rows:
        index = pc.index_in(_identity(rows, by_ts), value_set=_identity(standing, by_ts))
        known = pc.is_valid(index)
        copies = rows.filter(known)
        originals = standing.take(pc.drop_null(index))
        same = _same_content(originals, copies)
        redelivered += int(pc.sum(same).as_py() or 0)
        found.append(_conflict_rows(copies.filter(pc.invert(same)), originals.filter(pc.invert(same)), now))
        rows = rows.filter(pc.invert(known))
    return Resolution(rows=rows, conflicts=pa.concat_tables(found), redelivered=redelivered, lookup=lookup)


def recheck(store: Store, resolution: Resolution, *, now: datetime | None = None) -> pa.Table:
    """After ``resolution.rows`` are stored: conflicting copies of those ids that another writer
    stored at the same moment (module docstring). ``CONFLICT_SCHEMA`` rows, usually none."""
    if resolution.lookup is None or resolution.rows.num_rows == 0:
        return CONFLICT_SCHEMA.empty_table()
    repeated = _stored_copies(store, resolution.lookup, only_repeated=True)
    return _first_copies_and_conflicts(repeated, resolution.lookup.by_ts, now or datetime.now(timezone.utc))[1]


def _first_copies_and_conflicts(rows: pa.Table, by_ts: bool, now: datetime) -> tuple[pa.Table, pa.Table, int]:
    """The first copy of each event in ``rows``, the later copies that differ from it as
    conflict rows, and how many later copies were identical."""
    firsts, repeated = _first_copies(rows, by_ts)
    if repeated is None:
        return firsts, CONFLICT_SCHEMA.empty_table(), 0
    first, later = repeated
    same = _same_content(first, later)
    conflicts = _conflict_rows(later.filter(pc.invert(same)), first.filter(pc.invert(same)), now)
    return firsts, conflicts, int(pc.sum(same).as_py() or 0)


def _identity(rows: pa.Table, by_ts: bool) -> pa.Array:
    """What makes two rows copies of one event: the id, and with ``by_ts`` its ts (in ms) too."""
    ids = _array(rows["event_id"])
    if not by_ts:
        return ids
    millis = _array(rows["ts"]).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).cast(pa.string())
    return pc.binary_join_element_wise(ids, millis, "\x1f")


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _first_copies(rows: pa.Table, by_ts: bool) -> tuple[pa.Table, tuple[pa.Table, pa.Table] | None]:
    """The first copy of each event, and (first copy, later copy) pairs for events that come again."""
    n = rows.num_rows
    if n == 0 or pc.count_distinct(rows["event_id"]).as_py() == n:
        return rows, None
    identity = _identity(rows, by_ts)
    position = pa.array(np.arange(n, dtype=np.int64))
    first = pa.table({"k": identity, "i": position}).group_by("k").aggregate([("i", "min")])
    first_of = first["i_min"].take(pc.index_in(identity, value_set=first["k"]))
    is_first = pc.equal(first_of, position)
    later = pc.invert(is_first)
    return rows.filter(is_first), (rows.take(first_of.filter(later)), rows.filter(later))


def _look_up(store: Store, rows: pa.Table, horizon_s: float, by_ts: bool) -> _Lookup:
    """Put the ids of ``rows`` in event_id_probes: the store's copies are found by joining them."""
    probe = secrets.randbits(63)
    store.insert_arrow("event_id_probes", pa.table({
        "probe_id": pa.repeat(pa.scalar(probe, pa.uint64()), rows.num_rows), "event_id": rows["event_id"]}))
    horizon = timedelta(seconds=horizon_s)
    lowest, highest = pc.min_max(rows["ts"]).values()
    return _Lookup(probe=probe, since=sql_time(lowest.as_py() - horizon), until=sql_time(highest.as_py() + horizon),
                   by_ts=by_ts)


def _stored_copies(store: Store, lookup: _Lookup, *, only_repeated: bool = False) -> pa.Table:
    """Every stored copy of the looked-up ids whose ts lies within the horizon of the batch, oldest
    first (``precedence``: the first stored stands); with ``only_repeated``, only ids stored more than once."""
    columns = ", ".join(f"`{name}`" for name in (*COMPARED, *SOURCE, "total_cost"))
    identity = "event_id, ts" if lookup.by_ts else "event_id"
    return store.query_arrow(
        f"SELECT {columns} FROM (SELECT {columns}, ingested_at, "
        f"count() OVER (PARTITION BY {identity}) AS copies FROM usage_events "
        "WHERE ts >= {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')} "
        "AND event_id IN (SELECT event_id FROM event_id_probes WHERE probe_id = {probe:UInt64})) "
        "WHERE copies > {least:UInt8} ORDER BY ingested_at, source_topic, source_partition, source_offset",
        {"lo": lookup.since, "hi": lookup.until, "probe": lookup.probe, "least": int(only_repeated)})


def _same_content(a: pa.Table, b: pa.Table) -> pa.Array:
    """Row by row: do ``a`` and ``b`` say the same event? (Equal, or both null, in every compared field.)"""
    same = pa.array(np.ones(a.num_rows, dtype=bool))
    for name in COMPARED:
        same = pc.and_(same, _equal(name, a[name], b[name]))
    return same


def _equal(name: str, a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.Array:
    """Row by row: equal, or both null."""
    if name == "tags":
        return pa.array(_same_tags(a, b), pa.bool_())
    b = b.cast(a.type)
    return pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))


def _same_tags(a: pa.ChunkedArray, b: pa.ChunkedArray) -> list[bool]:
    # A value the cardinality guard folded into __other__ on one worker may be kept by another.
    def agree(x: dict[str, str], y: dict[str, str]) -> bool:
        return x.keys() == y.keys() and all(x[k] == y[k] or OTHER in (x[k], y[k]) for k in x)
    return [agree(dict(x or ()), dict(y or ())) for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)]


def _conflict_rows(copies: pa.Table, originals: pa.Table, now: datetime) -> pa.Table:
    """Conflicting ``copies`` (not applied) beside the ``originals`` that stand."""
    if copies.num_rows == 0:
        return CONFLICT_SCHEMA.empty_table()
    differs: list[list[str]] = [[] for _ in range(copies.num_rows)]
    for name in COMPARED:
        for i, equal in enumerate(_equal(name, originals[name], copies[name]).to_pylist()):
            if not equal:
                differs[i].append(name)
    as_json = [orjson.dumps({k: (dict(v) if k == "tags" else v) for k, v in row.items()}, default=str,
                            option=orjson.OPT_SORT_KEYS)
               for row in copies.select(list(COMPARED)).to_pylist()]
    return pa.table({
        "detected_at": pa.repeat(pa.scalar(now, TS), copies.num_rows),
        "event_id": copies["event_id"], "ts": copies["ts"].cast(TS), "stored_ts": originals["ts"].cast(TS),
        "differs": pa.array(differs, pa.list_(pa.string())),
        **{name: copies[name].cast(CONFLICT_SCHEMA.field(name).type) for name in SOURCE},
        **{f"stored_{name}": originals[name].cast(CONFLICT_SCHEMA.field(f"stored_{name}").type) for name in SOURCE},
        "copy_total_cost": copies["total_cost"].cast(MONEY), "stored_total_cost": originals["total_cost"].cast(MONEY),
        "copy": pa.array([j.decode() for j in as_json], pa.string()),
        "copy_digest": pa.array([raw_digest(j) for j in as_json], pa.uint64()),
    }, schema=CONFLICT_SCHEMA)

