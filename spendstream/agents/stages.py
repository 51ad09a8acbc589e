"""The pipeline's stages: pure functions over a batch of Kafka records. No I/O here.

    records ──decode──▶ items ──validate──▶ UsageEvents ──price (whole batch)──▶ PricedBatch
               │                 │
               └──── DeadLetters ┘
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from spendstream.agents.attribution import TagGuard
from spendstream.agents.events import NotABlock, NotFast, block_columns, block_items, events_table
from spendstream.batches import (
    NO_EVENTS,
    OTHER,
    WHOLE_RECORD,
    BatchResult,
    DeadLetter,
    GpuBatch,
    LedgerBatch,
    SourceRecord,
)
from spendstream.pricing.engine import Pricer, UsageColumns
from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LEDGER_WIRE_REQUIRED, LedgerEntry
from spendstream.schemas.usage import WIRE_REQUIRED, UsageEvent

M = TypeVar("M", bound=BaseModel)


def decode(record: SourceRecord) -> tuple[list[tuple[int, Any]], list[DeadLetter]]:
    """Split one record into items: a JSON array of events, or a single JSON object."""
    if not record.value:
        return [], [DeadLetter(record, WHOLE_RECORD, "empty record value", b"")]
    try:
        doc = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        return [], [DeadLetter(record, WHOLE_RECORD, f"record is not valid JSON: {exc}", record.value)]
    if isinstance(doc, dict):
        return [(0, doc)], []
    if isinstance(doc, list):
        if not doc:  # nothing to store, and it must not vanish without a trace either
            return [], [DeadLetter(record, WHOLE_RECORD, NO_EVENTS, record.value)]
        return list(enumerate(doc)), []
    kind = type(doc).__name__
    return [], [DeadLetter(record, WHOLE_RECORD, f"record is JSON {kind}, expected an object or an array of objects",
                           record.value)]


def validate(record: SourceRecord, items: Iterable[tuple[int, Any]], model: type[M] = UsageEvent,
             required: tuple[str, ...] = WIRE_REQUIRED, *, now: datetime | None = None
             ) -> tuple[list[M], list[DeadLetter]]:
    """Items that satisfy the contract (UsageEvent unless told), and dead letters saying why the others don't.
    ``now``: the clock a timestamp is judged against (:func:`implausible_time`; default the wall clock)."""
    kind = model.__name__
    events: list[M] = []
    dead: list[DeadLetter] = []
    for index, item in items:
        if not isinstance(item, dict):
            dead.append(DeadLetter(record, index, f"item {index} is JSON {type(item).__name__}, expected an object",
                                   _raw_item(item, record)))
            continue
        event_id = item.get(required[0]) if isinstance(item.get(required[0]), str) else None
        missing = [name for name in required if name not in item]
        if missing:
            dead.append(DeadLetter(record, index, f"invalid {kind}: missing required field(s) {', '.join(missing)}",
                                   _raw_item(item, record), event_id))
            continue
        try:
            event = model.model_validate(item)
        except ValidationError as exc:
            dead.append(DeadLetter(record, index, describe(exc, kind), _raw_item(item, record), event_id))
            continue
        ts = getattr(event, "ts", None)
        if ts is not None and (problem := implausible_time(ts, now)) is not None:
            dead.append(DeadLetter(record, index, f"invalid {kind}: {problem}", _raw_item(item, record), event_id))
            continue
        events.append(event)
    return events, dead


def _raw_item(item: Any, record: SourceRecord) -> bytes:
    """The item's own JSON; where it cannot be re-encoded (nested deeper than orjson allows), the whole record."""
    try:
        return orjson.dumps(item, default=str)
    except (TypeError, ValueError):
        return record.value or b""


# A timestamp outside these bounds is a broken clock or a unit mix-up (seconds read as
# milliseconds), not usage: it would land in a partition nobody looks at.
EARLIEST_TS = datetime(2020, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE = timedelta(days=1)


def implausible_time(ts: datetime, now: datetime | None = None) -> str | None:
    now = now or datetime.now(timezone.utc)
    if ts < EARLIEST_TS:
        return f"ts {ts.isoformat()} is before {EARLIEST_TS:%Y-%m-%d}: a broken clock or a unit mix-up"
    if ts > now + MAX_FUTURE:
        return f"ts {ts.isoformat()} is {(ts - now).days + 1} day(s) in the future (clock skew?)"
    return None


def describe(exc: ValidationError, kind: str = "UsageEvent") -> str:
    """A validation error as one line: which fields were wrong and how (never their values)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{location}: {error['msg']}")
    return f"invalid {kind}: " + "; ".join(parts)


def process(records: Sequence[SourceRecord], pricer: Pricer, tag_guard: TagGuard | None = None,
            now: datetime | None = None) -> BatchResult:
    """Decode and validate a batch of records, price all its events at once, bound their tags.

    Blocks take the fast path straight into columns; a block the fast path cannot
    vouch for, and records of events (a JSON array or object), take the exact path
    through pydantic. Both give the same columns.
    """
    latest = (now or datetime.now(timezone.utc)) + MAX_FUTURE
    result = BatchResult()
    tables: list[pa.Table] = []
    tags: list[tuple[list[dict[str, str]] | None, int]] = []  # per part: its tags (None: none at all), size
    sources: list[tuple[SourceRecord, int]] = []
    exact: list[UsageEvent] = []
    exact_sources: list[SourceRecord] = []
    for record in records:
        if record.value:
            try:
                table, block_tags = block_columns(record.value, earliest=EARLIEST_TS, latest=latest)
            except NotABlock:
                items, dead = decode(record)
            except NotFast:
                found = block_items(record.value)
                reason = found if isinstance(found, str) else None if found else NO_EVENTS
                items, dead = ([], [DeadLetter(record, WHOLE_RECORD, reason, record.value)]) if reason else (found, [])
            else:
                if table.num_rows == 0:
                    result.dead_letters.append(DeadLetter(record, WHOLE_RECORD, NO_EVENTS, record.value))
                    continue
                tables.append(table)
                tags.append((block_tags, table.num_rows))
                sources.append((record, table.num_rows))
                continue
        else:
            items, dead = decode(record)
        result.dead_letters.extend(dead)
        events, dead = validate(record, items, now=now)  # the fast path's clock, for the exact path too
        result.dead_letters.extend(dead)
        exact.extend(events)
        exact_sources.extend([record] * len(events))
    return price_events(result, tables, tags, sources, exact, exact_sources, pricer, tag_guard)


def price_events(result: BatchResult, tables: list[pa.Table], tags: list[tuple[list[dict[str, str]] | None, int]],
                 sources: list[tuple[SourceRecord, int]], exact: list[UsageEvent], exact_sources: list[SourceRecord],
                 pricer: Pricer, tag_guard: TagGuard | None) -> BatchResult:
    """``result`` with the batch's events as one table (fast-path ``tables``, then the ``exact`` events),
    their tags bounded by ``tag_guard``, the record each came from, and their prices (all at once)."""
    if exact:
        tables.append(events_table(exact))
        tags.append(([e.tags for e in exact], len(exact)))
        sources.extend((record, 1) for record in exact_sources)
    if not tables:
        return result
    events = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    n = events.num_rows
    tag_column, folded_column = _guarded_tags(tags, n, tag_guard or TagGuard())
    events = events.append_column("tags", tag_column).append_column("folded_tags", folded_column)
    counts = np.array([count for _, count in sources], dtype=np.int64)
    for name, type_, values in (("source_topic", pa.string(), [r.topic for r, _ in sources]),
                                ("source_partition", pa.uint32(), [r.partition for r, _ in sources]),
                                ("source_offset", pa.uint64(), [r.offset for r, _ in sources])):
        events = events.append_column(name, pa.array(values, type_).take(np.repeat(np.arange(len(sources)), counts)))
    result.events = events
    result.priced = pricer.price_columns(UsageColumns.from_table(events))
    return result


def _guarded_tags(parts: list[tuple[list[dict[str, str]] | None, int]], n: int, guard: TagGuard
                  ) -> tuple[pa.Array, pa.Array]:
    """The tags and folded_tags columns, built from the entries flattened once (no map per event)."""
    if all(part is None for part, _ in parts):
        events: list[dict[str, str]] = []
        lengths = np.zeros(n, dtype=np.int32)
    else:
        events = [tags for part, size in parts for tags in (part if part is not None else [{}] * size)]
        lengths = np.fromiter(map(len, events), dtype=np.int32, count=n)
    keys = pa.array([key for tags in events for key in tags], pa.string())
    values = pa.array([value for tags in events for value in tags.values()], pa.string())
    folded = guard.fold_entries(keys, values)
    stored = pc.if_else(pa.array(folded), pa.scalar(OTHER), values) if folded.any() else values
    tag_column = pa.MapArray.from_arrays(pa.array(_offsets(lengths)), keys, stored)
    folded_per_event = np.bincount(np.repeat(np.arange(n), lengths)[folded], minlength=n).astype(np.int32)
    folded_column = pa.ListArray.from_arrays(pa.array(_offsets(folded_per_event)), keys.filter(pa.array(folded)))
    return tag_column, folded_column


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(1, dtype=np.int32), np.cumsum(lengths, dtype=np.int32)])


# On the wire a sample must carry its own id (the idempotency key) and time.
GPU_WIRE_REQUIRED = ("sample_id", "ts", "deployment", "interval_s")


def process_gpu(records: Sequence[SourceRecord]) -> GpuBatch:
    """Decode and validate GPU exporter records."""
    return GpuBatch(*_decoded(records, GpuSample, GPU_WIRE_REQUIRED))


def _decoded(records: Sequence[SourceRecord], model: type[M], required: tuple[str, ...]
             ) -> tuple[list[M], list[DeadLetter]]:
    """Every record decoded and validated against ``model``: the valid items, and dead letters for the rest."""
    valid: list[M] = []
    dead_letters: list[DeadLetter] = []
    for record in records:
        items, dead = decode(record)
        dead_letters.extend(dead)
        ok, dead = validate(record, items, model, required)
        dead_letters.extend(dead)
        valid.extend(ok)
    return valid, dead_letters


def internal_error(records: Sequence[SourceRecord], exc: BaseException) -> list[DeadLetter]:
    """Every record of a batch that could not be processed, whole, with the error (a bug to report)."""
    reason = f"internal error while processing (please report): {type(exc).__name__}: {exc}"[:2000]
    return [DeadLetter(record, WHOLE_RECORD, reason, record.value or b"") for record in records]


R = TypeVar("R")


def isolated(run: Callable[[Sequence[SourceRecord]], R], records: Sequence[SourceRecord],
             failed: Callable[[list[DeadLetter]], R]) -> tuple[list[R], list[BaseException]]:
    """``run`` over the batch, where an unexpected error costs only the records that cause it.

    The stages dead-letter bad input themselves; an exception out of ``run`` is a bug.
    It must not cost the good records beside the one that triggers it, so the batch
    is run again record by record: each record that raises alone becomes one
    ``internal error`` dead letter (``failed``), and the rest are run together again
    (or, should that still raise, one by one). Returns the results to write, and the
    errors seen (for the log).
    """
    try:
        return [run(records)], []
    except Exception as exc:  # noqa: BLE001 - any bug; the records are kept, the error reported
        errors: list[BaseException] = [exc]
    good: list[SourceRecord] = []
    dead: list[DeadLetter] = []
    for record in records:
        try:
            run([record])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            dead.extend(internal_error([record], exc))
        else:
            good.append(record)
    results = [failed(dead)] if dead else []
    if not good:
        return results, errors
    try:
        return [run(good), *results], errors
    except Exception as exc:  # noqa: BLE001 - good alone, bad together: write them one by one
        errors.append(exc)
        return [run([record]) for record in good] + results, errors


def process_ledger(records: Sequence[SourceRecord]) -> LedgerBatch:
    """Decode and validate emitter ledger reports."""
    return LedgerBatch(*_decoded(records, LedgerEntry, LEDGER_WIRE_REQUIRED))
