"""How events become Kafka record values: one JSON array carries many events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json


def encode_event(event: BaseModel | Mapping[str, Any]) -> bytes:
    """One event as compact JSON bytes (models via pydantic, mappings as given)."""
    if isinstance(event, BaseModel):
        return event.model_dump_json().encode()
    return to_json(event)


def join_record(parts: list[bytes]) -> bytes:
    """Many encoded events as one record value: a JSON array."""
    return b"[" + b",".join(parts) + b"]"


def record_overhead_bytes(n_parts: int) -> int:
    """Bytes ``join_record`` adds around ``n_parts`` events."""
    return 2 + max(n_parts - 1, 0)
