"""The emitter's ledger: what it handed to Kafka, per source and minute, for reconciliation.

After each record Kafka acknowledged, the emitter's thread notes its events by
(service, minute of ``ts``), counting each ``event_id`` once (an event the host
emits twice is one event). Every ``interval_s`` — and on flush and close — it
sends its cumulative counts to the ledger topic; the pipeline keeps the latest
report of each emitter, and ``spendstream reconcile`` compares them with what
ClickHouse stored. No prompt, no attribution beyond ``service``, leaves here.

Memory is bounded: ids are kept as 64-bit hashes per minute for
``keep_minutes`` of event time, at most ``max_ids_per_minute`` a minute;
beyond either, events are still counted but a re-send of the same event could
count twice (the report says so with ``exact = false``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel


def _minute(ts: Any) -> str | None:
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts)
        except ValueError:
            return None
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        return None
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:00Z")


def event_key(event: BaseModel | Mapping[str, Any]) -> tuple[str, str, int] | None:
    """(service, minute, id hash) of an event, or None when it has no id or no readable time."""
    get = event.get if isinstance(event, Mapping) else lambda name: getattr(event, name, None)
    event_id, minute = get("event_id"), _minute(get("ts"))
    if not isinstance(event_id, str) or minute is None:
        return None
    # surrogatepass: a lone surrogate (which no JSON encoder accepts) must not make keying raise;
    # such an event is dropped as unencodable when it is encoded.
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return str(get("service") or ""), minute, int.from_bytes(digest, "little")


@dataclass
class _Bucket:
    events: int = 0
    ids: set[int] | None = field(default_factory=set)
    exact: bool = True


@dataclass
class Ledger:
    emitter_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    interval_s: float = 60.0
    keep_minutes: int = 180
    max_ids_per_minute: int = 500_000
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _dirty: set[tuple[str, str]] = field(default_factory=set)
    _last_report: float = field(default_factory=time.monotonic)

    def delivered(self, keys: list[tuple[str, str, int] | None]) -> None:
        """Note the events of one acknowledged record."""
        for key in keys:
            if key is None:
                continue
            service, minute, id_hash = key
            bucket = self._buckets.setdefault((service, minute), _Bucket())
            if bucket.ids is not None:
                if id_hash in bucket.ids:
                    continue
                if len(bucket.ids) >= self.max_ids_per_minute:
                    bucket.ids, bucket.exact = None, False
                else:
                    bucket.ids.add(id_hash)
            bucket.events += 1
            self._dirty.add((service, minute))

    @property
    def pending(self) -> bool:
        return bool(self._dirty)

    def unreported(self, entries: list[dict[str, Any]]) -> None:
        """Entries whose report was not delivered: include them next time."""
        self._dirty.update((e["service"], e["minute"]) for e in entries)

    def due(self) -> bool:
        return bool(self._dirty) and time.monotonic() - self._last_report >= self.interval_s

    def report(self) -> list[dict[str, Any]]:
        """Cumulative counts of the buckets that changed since the last report; forgets old ids."""
        now = datetime.now(timezone.utc)
        entries = [{"emitter_id": self.emitter_id, "service": service, "minute": minute,
                    "events": self._buckets[(service, minute)].events, "exact": self._buckets[(service, minute)].exact,
                    "reported_at": now.isoformat()} for service, minute in sorted(self._dirty)]
        self._dirty.clear()
        self._last_report = time.monotonic()
        horizon = now.timestamp() - self.keep_minutes * 60
        for (_service, minute), bucket in self._buckets.items():
            if bucket.ids is not None and datetime.fromisoformat(minute).timestamp() < horizon:
                bucket.ids, bucket.exact = None, False  # keep counting; stop remembering ids
        return entries
