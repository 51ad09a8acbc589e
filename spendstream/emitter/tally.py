"""What became of the events an emitter was given: sent, or dropped for a counted reason."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

log = logging.getLogger(__name__)

# Every way an event can be lost; each has a counter, dropped_<reason>, in Emitter.stats().
DROP_REASONS = (
    "queue_full",  # the buffer held max_queue_events events or max_buffer_bytes bytes
    "oversize",  # one event alone is larger than max_batch_bytes
    "shutdown",  # emitted after close(), or still held when close() ran out of time
    "send_failed",  # Kafka did not acknowledge the record before delivery_timeout_s (or the sender failed itself)
    "unencodable",  # the event could not be keyed or serialised (e.g. a lone surrogate in a string)
)
_LOG_EVERY_S = 60.0


class Tally:
    """Counts of events sent and dropped by reason, safe to update from any thread.

    Updates take a lock, so they belong on slow paths only (a drop, a record
    acknowledged): ``emit()`` accepting an event counts nothing here. Each reason
    logs one warning at most every minute; the line names the reason and, where
    there is one, the exception's type, never an event's content or id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}

    def sent(self, *, events: int) -> None:
        """One record Kafka acknowledged, carrying ``events`` events."""
        with self._lock:
            self._counts["sent_events"] += events
            self._counts["sent_records"] += 1

    def dropped(self, reason: str, events: int = 1, *, cause: BaseException | None = None) -> None:
        """``events`` events lost for ``reason`` (one of DROP_REASONS)."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of {DROP_REASONS}")
        if events <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._counts[f"dropped_{reason}"] += events
            should_log = now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S
            if should_log:
                self._last_log[reason] = now
        if should_log:
            because = f" ({type(cause).__name__})" if cause is not None else ""
            log.warning("spendstream emitter dropped %d event(s): %s%s; further drops are counted in stats()",
                        events, reason, because)

    def snapshot(self) -> dict[str, int]:
        """sent_events, sent_records and dropped_<reason> for every reason, zeros included."""
        out = {"sent_events": 0, "sent_records": 0} | {f"dropped_{reason}": 0 for reason in DROP_REASONS}
        with self._lock:
            out.update(self._counts)
        return out
