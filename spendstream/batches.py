"""Records and batches as they move between the layers: the bottom of the import graph.

A Kafka record as consumed (:class:`SourceRecord`), what could not be stored
(:class:`DeadLetter`), and the batches the stages hand to the sinks: usage events as
Arrow columns (:data:`EVENT_SCHEMA`) with their prices, GPU samples, ledger reports.
A contract's columns are derived from the contract (:func:`contract_columns`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
from pydantic import BaseModel

from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LedgerEntry
from spendstream.schemas.shape import field_shapes
from spendstream.schemas.usage import UsageEvent

if TYPE_CHECKING:
    from spendstream.pricing.engine import PricedBatch

WHOLE_RECORD = -1
NO_EVENTS = "record holds no events (an empty array or block)"
# A free tag's value once the attribution guard has folded it (agents/attribution.py).
OTHER = "__other__"

TS = pa.timestamp("ms", tz="UTC")

# A contract field's Arrow type follows its shape (schemas/shape.py). Integers are unsigned
# where the contract bounds them at >= 0, and 64 bits wide unless `widths` names a narrower
# column that a table was created with.
_ARROW_TYPES: dict[type, pa.DataType] = {
    str: pa.string(), float: pa.float64(), bool: pa.bool_(), datetime: TS, dict: pa.map_(pa.string(), pa.string()),
}


def contract_columns(model: type[BaseModel], *, widths: Mapping[str, pa.DataType] | None = None,
                     stored_elsewhere: Mapping[str, str] | None = None) -> list[tuple[str, pa.DataType]]:
    """A column per field of ``model``, in contract order, with its Arrow type.

    Every field is a column except a constant one (its type admits one value, as
    ``schema_version: Literal[1]``: the same in every row, it tells nothing) and those
    in ``stored_elsewhere`` (name: where they are stored instead). ``widths`` gives the
    integer columns narrower than 64 bits. A name in either mapping that is not a
    field of the model raises ValueError: an exemption must not outlive its field.
    """
    widths, stored_elsewhere = widths or {}, stored_elsewhere or {}
    shapes = {shape.name: shape for shape in field_shapes(model)}
    for name in [*widths, *stored_elsewhere]:
        if name not in shapes:
            raise ValueError(f"{model.__name__} has no field {name!r} (named in its column mapping)")
    columns = []
    for name, shape in shapes.items():
        if shape.constant or name in stored_elsewhere:
            continue
        if shape.kind is int:
            low = min(shape.literals) if shape.literals else shape.constraints.get("ge", shape.constraints.get("gt"))
            type_ = widths.get(name, pa.uint64() if low is not None and low >= 0 else pa.int64())
        else:
            type_ = _ARROW_TYPES[shape.kind]
        columns.append((name, type_))
    return columns


# The usage_events columns an event decides: its fields, then `extra`, which only the table
# has (the fields this contract version does not know, as JSON).
EVENT_COLUMNS: list[tuple[str, pa.DataType]] = contract_columns(
    UsageEvent,
    widths={"attempt": pa.uint32(), "http_status": pa.uint16(), "schema_version": pa.uint16(),
            **{name: pa.uint32() for name in ("web_search_calls", "web_fetch_calls", "file_search_calls",
                                              "code_execution_calls")}},
    stored_elsewhere={"tags": "the tags and folded_tags columns, after the cardinality guard (agents/stages.py)"},
) + [("extra", pa.string())]
EVENT_SCHEMA = pa.schema(EVENT_COLUMNS)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record as consumed."""

    topic: str
    partition: int
    offset: int
    # Left out of repr: every dead letter of an array record refers to the record, so a repr of a batch
    # with thousands of bad items would print the whole record once per item (gigabytes).
    value: bytes | None = field(repr=False)


# What kind of problem a dead letter's reason describes, by how the stages word it: a bounded
# set, for counters and dashboards (the reason itself is free text, with field names and values'
# types). First match wins; a reason none of these knows is "other" (a test keeps that empty).
DEAD_LETTER_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(pattern)) for kind, pattern in (
    ("empty", r"empty record value"),
    ("not_json", r"record is not valid JSON"),
    ("no_events", re.escape(NO_EVENTS)),
    ("not_an_object", r"(record|item \d+) is JSON \w+, expected an"),
    ("bad_block", r"(unknown block format|block column)"),
    ("missing_field", r"invalid \w+: missing required field"),
    ("implausible_time", r"invalid \w+: ts \S+ is (before|\d+ day)"),
    ("invalid_field", r"invalid \w+: "),
    ("internal_error", r"internal error while processing"),
))
OTHER_KIND = "other"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: SourceRecord
    item_index: int
    reason: str
    raw: bytes
    event_id: str | None = None

    @property
    def kind(self) -> str:
        """The reason's kind: a name from :data:`DEAD_LETTER_KINDS`, or ``other``."""
        return next((kind for kind, pattern in DEAD_LETTER_KINDS if pattern.match(self.reason)), OTHER_KIND)


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
    # Items that are not usage and were left out on purpose (spans that are not model calls), by why.
    skipped: dict[str, int] = field(default_factory=dict)

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
