"""Events on their way into Kafka records: the batch being filled, and the records sealed from it.

One bad event costs that event, never its batch: a block that fails to encode is
halved until the failing events stand alone, and those are dropped and counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from spendstream.emitter.encoding import encode_block, join_record
from spendstream.schemas.usage import UsageEvent

# An event's ledger key (service, minute, id hash), or None when it has none.
Key = tuple[str, str, int] | None


@dataclass(slots=True)
class Record:
    """One Kafka record value and the ledger keys of the events it carries, one key per event."""

    value: bytes
    keys: list[Key]


@dataclass(slots=True)
class Sealed:
    """What sealing a batch produced: records to send, and events dropped with their reason."""

    records: list[Record] = field(default_factory=list)
    unencodable: int = 0
    oversize: int = 0
    first_error: Exception | None = None  # what the first unencodable event raised


class Batch:
    """Events waiting to be sealed: UsageEvents for blocks, anything else as encoded rows.

    Rows are encoded when added (so their size is known); block events when sealed.
    """

    __slots__ = ("block", "block_keys", "rows", "row_keys", "rows_size", "started")

    def __init__(self) -> None:
        self.block: list[UsageEvent] = []
        self.block_keys: list[Key] = []
        self.rows: list[bytes] = []
        self.row_keys: list[Key] = []
        self.rows_size = 0  # bytes of the rows' record value, less its one closing bracket
        self.started = time.monotonic()

    def __len__(self) -> int:
        return len(self.block) + len(self.rows)

    def add_to_block(self, event: UsageEvent, key: Key) -> None:
        if not self:
            self.started = time.monotonic()
        self.block.append(event)
        self.block_keys.append(key)

    def row_fits(self, encoded_bytes: int, max_bytes: int) -> bool:
        """Whether a row of ``encoded_bytes`` fits in this batch's rows record under ``max_bytes``."""
        return not self.rows or self.rows_size + encoded_bytes + 2 <= max_bytes

    def add_row(self, encoded: bytes, key: Key) -> None:
        if not self:
            self.started = time.monotonic()
        self.rows.append(encoded)
        self.row_keys.append(key)
        self.rows_size += len(encoded) + 1

    def seal(self, max_bytes: int) -> Sealed:
        """Records of at most ``max_bytes`` each; events that cannot be encoded or fit alone are counted out."""
        sealed = Sealed()
        pending = [(self.block, self.block_keys)] if self.block else []
        while pending:  # a stack, first half on top: records keep the events' order
            events, keys = pending.pop()
            try:
                value = encode_block(events)
            except Exception as exc:  # whatever one event's values raise, it costs that event only
                if len(events) == 1:
                    sealed.unencodable += 1
                    if sealed.first_error is None:
                        sealed.first_error = exc
                    continue
                value = None
            if value is not None and len(value) <= max_bytes:
                sealed.records.append(Record(value, keys))
            elif len(events) > 1:
                half = len(events) // 2
                pending += [(events[half:], keys[half:]), (events[:half], keys[:half])]
            else:
                sealed.oversize += 1
        if self.rows:
            sealed.records.append(Record(join_record(self.rows), self.row_keys))
        return sealed
