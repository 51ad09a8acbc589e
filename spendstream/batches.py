"""Records and batches as they move between the layers: the bottom of the import graph.

A Kafka record as consumed (:class:`SourceRecord`), what could not be stored
(:class:`DeadLetter`), and the batches the stages hand to the sinks: usage events as
Arrow columns (:data:`EVENT_SCHEMA`) with their prices, GPU samples, ledger reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa

from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LedgerEntry
from spendstream.schemas.usage import UsageEvent

if TYPE_CHECKING:
    from spendstream.pricing.engine import PricedBatch

WHOLE_RECORD = -1
NO_EVENTS = "record holds no events (an empty array or block)"
# A free tag's value once the attribution guard has folded it (agents/attribution.py).
OTHER = "__other__"

TS = pa.timestamp("ms", tz="UTC")

# The usage_events columns an event decides, with their Arrow types.
EVENT_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()), ("ts", TS), ("request_id", pa.string()), ("attempt", pa.uint32()),
    ("provider", pa.string()), ("model", pa.string()), ("deployment", pa.string()), ("mode", pa.string()),
    ("service_tier", pa.string()),
    ("input_tokens", pa.uint64()), ("cached_input_tokens", pa.uint64()), ("cache_write_tokens", pa.uint64()),
    ("cache_write_1h_tokens", pa.uint64()), ("output_tokens", pa.uint64()), ("reasoning_tokens", pa.uint64()),
    ("tokens_estimated", pa.bool_()), ("tokenizer", pa.string()),
    ("latency_ms", pa.float64()), ("ttft_ms", pa.float64()), ("status", pa.string()), ("http_status", pa.uint16()),
    ("team", pa.string()), ("feature", pa.string()), ("customer", pa.string()), ("environment", pa.string()),
    ("user_hash", pa.string()),
    ("prefix_fingerprint", pa.string()), ("prefix_tokens", pa.uint64()), ("max_tokens", pa.uint64()),
    ("service", pa.string()), ("extra", pa.string()),
]
EVENT_SCHEMA = pa.schema(EVENT_COLUMNS)


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
    """A processed batch: its valid events as columns, their prices, and the dead letters.

    ``events`` has the ``usage_events`` columns an event decides (``EVENT_SCHEMA``),
    then ``tags`` and ``folded_tags`` after the cardinality guard, then where each
    event came from (``source_topic``, ``source_partition``, ``source_offset``).
    """

    events: pa.Table | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    priced: PricedBatch | None = None

    @property
    def num_events(self) -> int:
        return 0 if self.events is None else self.events.num_rows

    def event(self, i: int) -> UsageEvent:
        """Event ``i`` as the contract's model (for tests and tools; the pipeline keeps columns)."""
        assert self.events is not None
        row = self.events.slice(i, 1).to_pylist()[0]
        extra = orjson.loads(row.pop("extra")) if row["extra"] else {}
        for name in ("folded_tags", "source_topic", "source_partition", "source_offset"):
            row.pop(name)
        return UsageEvent.model_validate({**row, "tags": dict(row["tags"]), **extra})

    def cost_record(self, i: int):
        """Event ``i`` with its price, as a CostRecord."""
        assert self.priced is not None
        return self.priced.record(self.event(i), i)


@dataclass(slots=True)
class GpuBatch:
    samples: list[GpuSample] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(slots=True)
class LedgerBatch:
    entries: list[LedgerEntry] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
