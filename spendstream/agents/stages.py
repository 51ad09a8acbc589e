"""The pipeline's stages: pure functions over a batch of Kafka records. No I/O here.

    records ──decode──▶ items ──validate──▶ UsageEvents ──price (whole batch)──▶ PricedBatch
               │                 │
               └──── DeadLetters ┘
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from spendstream.agents.attribution import TagGuard
from spendstream.pricing.engine import PricedBatch, Pricer, UsageColumns
from spendstream.schemas.alert import Alert
from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LEDGER_WIRE_REQUIRED, LedgerEntry
from spendstream.schemas.usage import WIRE_REQUIRED, UsageEvent

WHOLE_RECORD = -1
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record as consumed."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: SourceRecord
    item_index: int
    reason: str
    raw: bytes
    event_id: str | None = None


@dataclass(slots=True)
class BatchResult:
    """A processed batch: the valid events, where each came from, their prices, and the dead letters."""

    events: list[UsageEvent] = field(default_factory=list)
    sources: list[SourceRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    priced: PricedBatch | None = None
    tags: list[dict[str, str]] = field(default_factory=list)  # each event's tags after the cardinality guard
    folded_tags: list[list[str]] = field(default_factory=list)

    def cost_record(self, i: int):
        """Event ``i`` with its price, as a CostRecord."""
        assert self.priced is not None
        return self.priced.record(self.events[i], i)


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
        return list(enumerate(doc)), []
    kind = type(doc).__name__
    return [], [DeadLetter(record, WHOLE_RECORD, f"record is JSON {kind}, expected an object or an array of objects",
                           record.value)]


def validate(record: SourceRecord, items: Iterable[tuple[int, Any]], model: type[M] = UsageEvent,
             required: tuple[str, ...] = WIRE_REQUIRED) -> tuple[list[M], list[DeadLetter]]:
    """Items that satisfy the contract (UsageEvent unless told), and dead letters saying why the others don't."""
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
        if ts is not None and (problem := implausible_time(ts)) is not None:
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


def process(records: Sequence[SourceRecord], pricer: Pricer, tag_guard: TagGuard | None = None) -> BatchResult:
    """Decode and validate a batch of records, price all its events at once, bound their tags."""
    result = BatchResult()
    for record in records:
        items, dead = decode(record)
        result.dead_letters.extend(dead)
        events, dead = validate(record, items)
        result.dead_letters.extend(dead)
        result.events.extend(events)
        result.sources.extend([record] * len(events))
    if result.events:
        result.priced = pricer.price_columns(UsageColumns.from_events(result.events))
    guard = tag_guard or TagGuard()
    for event in result.events:
        tags, folded = guard.fold(event.tags)
        result.tags.append(tags)
        result.folded_tags.append(folded)
    return result


def unpriced_alerts(batch: BatchResult, now: datetime) -> list[Alert]:
    """One ``unpriced_model`` alert per provider/model per UTC day seen unpriced in ``batch``.

    The dedup key names the model and the day, so however many batches, workers or
    restarts see the model, the ``alerts`` table holds it once a day.
    """
    if batch.priced is None:
        return []
    counts: dict[tuple[str, str, str, object], int] = {}
    for i, priced in enumerate(batch.priced.priced.to_pylist()):
        if not priced:
            event = batch.events[i]
            key = (event.provider, event.model, batch.priced.unpriced_reason[i].as_py(),
                   event.ts.astimezone(timezone.utc).date())
            counts[key] = counts.get(key, 0) + 1
    alerts = []
    for (provider, model, reason, day), count in sorted(counts.items(), key=str):
        start = datetime.combine(day, time(0), timezone.utc)
        alerts.append(Alert(
            kind="unpriced_model", severity="warning", state="firing",
            subject=f"provider={provider} model={model}",
            window_start=start, window_end=start + timedelta(days=1), observed=Decimal(count),
            dedup_key=f"unpriced_model:{provider}/{model}:{day.isoformat()}",
            message=(f"{reason}. Its events are stored with priced = false (never as 0); add the model to the "
                     "overrides file, or upgrade the catalog, then run `spendstream reprice`."),
            created_at=now,
        ))
    return alerts


# On the wire a sample must carry its own id (the idempotency key) and time.
GPU_WIRE_REQUIRED = ("sample_id", "ts", "deployment", "interval_s")


@dataclass(slots=True)
class GpuBatch:
    samples: list[GpuSample] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


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


@dataclass(slots=True)
class LedgerBatch:
    entries: list[LedgerEntry] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def process_ledger(records: Sequence[SourceRecord]) -> LedgerBatch:
    """Decode and validate emitter ledger reports."""
    return LedgerBatch(*_decoded(records, LedgerEntry, LEDGER_WIRE_REQUIRED))
