"""The pipeline's stages: pure functions over a batch of Kafka records. No I/O here.

    records ──decode──▶ items ──validate──▶ UsageEvents ──price──▶ CostRecords
               │                 │
               └──── DeadLetters ┘
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from spendstream.pricing.catalog import Catalog
from spendstream.schemas.cost import CostRecord
from spendstream.schemas.usage import WIRE_REQUIRED, UsageEvent

WHOLE_RECORD = -1


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


@dataclass(frozen=True, slots=True)
class Priced:
    source: SourceRecord
    record: CostRecord


@dataclass(slots=True)
class BatchResult:
    priced: list[Priced] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


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


def validate(record: SourceRecord, items: Iterable[tuple[int, Any]]) -> tuple[list[UsageEvent], list[DeadLetter]]:
    """Items that satisfy the UsageEvent contract, and dead letters saying why the others don't."""
    events: list[UsageEvent] = []
    dead: list[DeadLetter] = []
    for index, item in items:
        if not isinstance(item, dict):
            dead.append(DeadLetter(record, index, f"item {index} is JSON {type(item).__name__}, expected an object",
                                   orjson.dumps(item)))
            continue
        event_id = item.get("event_id") if isinstance(item.get("event_id"), str) else None
        missing = [name for name in WIRE_REQUIRED if name not in item]
        if missing:
            dead.append(DeadLetter(record, index, f"invalid UsageEvent: missing required field(s) {', '.join(missing)}",
                                   orjson.dumps(item, default=str), event_id))
            continue
        try:
            events.append(UsageEvent.model_validate(item))
        except ValidationError as exc:
            dead.append(DeadLetter(record, index, describe(exc), orjson.dumps(item, default=str), event_id))
    return events, dead


def describe(exc: ValidationError) -> str:
    """A validation error as one line: which fields were wrong and how (never their values)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{location}: {error['msg']}")
    return "invalid UsageEvent: " + "; ".join(parts)


def process(records: Sequence[SourceRecord], catalog: Catalog) -> BatchResult:
    """Decode, validate and price a batch of records."""
    result = BatchResult()
    for record in records:
        items, dead = decode(record)
        result.dead_letters.extend(dead)
        events, dead = validate(record, items)
        result.dead_letters.extend(dead)
        result.priced.extend(Priced(record, catalog.price(event)) for event in events)
    return result
