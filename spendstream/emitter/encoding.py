"""How events become Kafka record values: many events per record.

- A **block** (what the emitter sends for :class:`UsageEvent` objects): one JSON
  object of columns, ``{"block": "usage-columns/1", "event_id": [...], "ts": [...], ...}``.
  A column where every event has the contract's default is left out. Field names
  are written once per record, not once per event (less than half the bytes), and
  the worker decodes a block straight into Arrow columns.
- **Events** (anything else, and what services in other languages may send): a JSON
  array of event objects, or one object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

from spendstream.schemas.usage import BLOCK_FORMAT, WIRE_REQUIRED, UsageEvent

# Every field in contract order with its default. The columns the wire requires are always
# written; any other is left out where every event has its default.
_BLOCK_DEFAULTS = {name: field.get_default(call_default_factory=True)
                   for name, field in UsageEvent.model_fields.items()}
_ALWAYS = tuple(name for name, field in UsageEvent.model_fields.items()
                if field.is_required() or name in WIRE_REQUIRED)


def encode_event(event: BaseModel | Mapping[str, Any]) -> bytes:
    """One event as compact JSON bytes (models via pydantic, mappings as given)."""
    if isinstance(event, BaseModel):
        return event.model_dump_json().encode()
    return to_json(event)


def blockable(event: object) -> bool:
    """Whether ``event`` goes in a block: a UsageEvent with no fields beyond the contract."""
    return type(event) is UsageEvent and not event.__pydantic_extra__


def encode_block(events: Sequence[UsageEvent]) -> bytes:
    """Many validated events as one block of columns."""
    rows = [event.__dict__ for event in events]
    columns: dict[str, Any] = {"block": BLOCK_FORMAT}
    for name, default in _BLOCK_DEFAULTS.items():
        values = [row[name] for row in rows]
        if name in _ALWAYS or values.count(default) != len(values):
            columns[name] = values
    return to_json(columns)


def join_record(parts: list[bytes]) -> bytes:
    """Many encoded events as one record value: a JSON array."""
    return b"[" + b",".join(parts) + b"]"
