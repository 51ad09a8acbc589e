"""The emitter a service embeds: ``emit()`` never blocks and never raises."""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

from spendstream.emitter.encoding import blockable, encode_block, encode_event, join_record
from spendstream.emitter.ledger import Ledger, event_key
from spendstream.emitter.sender import KafkaSender, SendFailed, SenderConfig
from spendstream.schemas.usage import UsageEvent

log = logging.getLogger(__name__)

Event = BaseModel | Mapping[str, Any]

LEDGER_DEADLINE_S = 5.0
DROP_REASONS = ("queue_full", "oversize", "shutdown", "send_failed", "unencodable")
_LOG_EVERY_S = 60.0


class _Flush:
    """Queue marker: set once everything queued before it has been handled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()

Key = tuple[str, str, int] | None


class _Batch:
    """Events waiting to be sent: UsageEvents for one block, anything else as encoded rows."""

    __slots__ = ("block", "block_keys", "rows", "row_keys", "rows_size", "started")

    def __init__(self) -> None:
        self.block: list[UsageEvent] = []
        self.block_keys: list[Key] = []
        self.rows: list[bytes] = []
        self.row_keys: list[Key] = []
        self.rows_size = 0
        self.started = time.monotonic()

    def __len__(self) -> int:
        return len(self.block) + len(self.rows)

    def add_to_block(self, event: UsageEvent, key: Key) -> None:
        if not self:
            self.started = time.monotonic()
        self.block.append(event)
        self.block_keys.append(key)

    def add_row(self, encoded: bytes, key: Key) -> None:
        if not self:
            self.started = time.monotonic()
        self.rows.append(encoded)
        self.row_keys.append(key)
        self.rows_size += len(encoded) + 1

    def records(self, max_bytes: int) -> list[tuple[bytes, list[Key]]]:
        """Record values with the ledger keys of their events; a block too big for one record is split."""
        out = []
        pending = [(self.block, self.block_keys)] if self.block else []
        while pending:
            events, keys = pending.pop()
            value = encode_block(events)
            if len(value) > max_bytes and len(events) > 1:
                half = len(events) // 2
                pending += [(events[half:], keys[half:]), (events[:half], keys[:half])]
                continue
            out.append((value, keys))  # one event alone is far below the bound (the contract bounds its size)
        if self.rows:
            out.append((join_record(self.rows), self.row_keys))
        return out


class Emitter:
    """Buffers usage events and sends them to Kafka in batches from one thread.

    ``emit()`` puts the event on a bounded queue without waiting; when the queue is
    full the event is dropped and counted (``stats()["dropped_queue_full"]``). A
    background thread encodes events, packs many into one Kafka record (a JSON
    array, bounded by ``max_batch_events`` and ``max_batch_bytes``) and sends it
    when the batch is full or ``flush_interval_s`` has passed, retrying with
    jittered backoff until ``delivery_timeout_s``.

    The thread starts on the first ``emit()`` (no I/O in the constructor) and is
    started afresh in a child after ``fork``. Errors become counters and a
    rate-limited log line; with ``debug=True`` they are raised, for tests.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str = "spendstream.usage",
        max_queue_events: int = 100_000,
        max_batch_events: int = 1_000,
        max_batch_bytes: int = 512 * 1024,
        flush_interval_s: float = 0.5,
        delivery_timeout_s: float = 300.0,
        client_id: str = "spendstream-emitter",
        ledger_topic: str | None = "spendstream.ledger",
        ledger_interval_s: float = 60.0,
        register_atexit: bool = True,
        debug: bool = False,
    ) -> None:
        if max_batch_bytes > 1_000_000:
            raise ValueError("max_batch_bytes must stay under Kafka's default 1 MB message limit")
        self._sender_config = SenderConfig(
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            client_id=client_id,
            delivery_timeout_s=delivery_timeout_s,
            max_request_bytes=max_batch_bytes + 64 * 1024,
        )
        self._max_queue_events = max_queue_events
        self._max_batch_events = max_batch_events
        self._max_batch_bytes = max_batch_bytes
        self._flush_interval_s = flush_interval_s
        self._ledger_topic = ledger_topic
        self.ledger = Ledger(interval_s=ledger_interval_s)
        self._debug = debug
        self._closed = False
        self._stats_lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        # Counted on emit()'s path: itertools.count is advanced atomically under the GIL, no lock needed.
        self._enqueued = itertools.count()
        self._queue_full = itertools.count()
        self._last_log: dict[str, float] = {}
        self._reset_after_fork()
        if register_atexit:
            ref = weakref.ref(self)
            atexit.register(lambda: (e := ref()) and e.close())
        os.register_at_fork(after_in_child=_weak_call(self, Emitter._reset_after_fork))

    # -- host-facing API ------------------------------------------------------

    def emit(self, event: Event) -> bool:
        """Queue ``event`` for sending. Returns False (and counts why) if it was dropped."""
        if self._closed:
            self._drop("shutdown")
            return False
        if self._thread is None:
            self._start_thread()
        buffer = self._buffer
        if len(buffer) >= self._max_queue_events:
            next(self._queue_full)  # lock-free and exact: itertools.count advances atomically under the GIL
            self._log_drop("queue_full", 1)
            return False
        buffer.append(event)  # deque.append is atomic; no lock on the host's path
        next(self._enqueued)
        queued = len(buffer)
        if queued == 1 or queued >= self._max_batch_events:
            self._wake.set()  # the sender was idle, or a full batch waits: wake it (under load, neither happens)
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything emitted so far. True if done within ``timeout_s``."""
        if self._thread is None:
            return True
        marker = _Flush()
        self._buffer.append(marker)  # markers may go past the bound: they are not events
        self._wake.set()
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and stop, within one deadline. Idempotent. Later emits are dropped as ``shutdown``."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        thread = self._thread
        if thread is not None:
            self.flush(timeout_s)
            self._buffer.append(_STOP)
            self._wake.set()
            thread.join(max(deadline - time.monotonic(), 0))
        self._drain_as_dropped("shutdown")

    def stats(self) -> dict[str, int]:
        """Counters: enqueued, sent events/records, and dropped_<reason> for every reason."""
        with self._stats_lock:
            out = {"enqueued": 0, "sent_events": 0, "sent_records": 0}
            out.update({f"dropped_{reason}": 0 for reason in DROP_REASONS})
            out.update(self._stats)
        out["enqueued"] = _value(self._enqueued)
        out["dropped_queue_full"] += _value(self._queue_full)
        return out

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        # A child inherits the parent's queue contents and a dead thread: start
        # empty (the parent still sends what it queued) and lazily re-create the thread.
        # A deque the host appends to and the sender pops from, bounded by the check in emit()
        # (two host threads racing at the bound can overshoot it by one each).
        self._buffer: collections.deque[object] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="spendstream-emitter", daemon=True)
                thread.start()
                self._thread = thread

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._stats_lock:
            self._stats[f"dropped_{reason}"] += count
        self._log_drop(reason, count)

    def _log_drop(self, reason: str, count: int) -> None:
        now = time.monotonic()
        if now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[reason] = now
            log.warning("spendstream emitter dropped %d event(s): %s (further drops counted in stats())", count, reason)

    def _drain_as_dropped(self, reason: str) -> None:
        dropped = 0
        while True:
            try:
                item = self._buffer.popleft()
            except IndexError:
                break
            if isinstance(item, _Flush):
                item.done.set()
            elif item is not _STOP:
                dropped += 1
        if dropped:
            self._drop(reason, dropped)

    def _run(self) -> None:
        sender = KafkaSender(self._sender_config)
        try:
            self._loop(sender)
        finally:
            sender.close()

    def _loop(self, sender: KafkaSender) -> None:
        batch = _Batch()
        while True:
            wait_s = self._flush_interval_s - (time.monotonic() - batch.started) if batch else None
            try:
                item = self._next(max(wait_s, 0) if wait_s is not None else self._flush_interval_s)
            except queue.Empty:
                item = None  # the batch is due
            if item is _STOP:
                self._send(sender, batch)
                self._report_ledger(sender, force=True)
                return
            if isinstance(item, _Flush):
                self._send(sender, batch)
                batch = _Batch()
                self._report_ledger(sender, force=True)
                item.done.set()
                continue
            if item is not None:
                key = event_key(item) if self._ledger_topic else None  # type: ignore[arg-type]
                if blockable(item):
                    batch.add_to_block(item, key)  # type: ignore[arg-type]
                else:
                    encoded = self._encode(item)
                    if encoded is None:
                        continue
                    if batch.rows and batch.rows_size + len(encoded) + 1 > self._max_batch_bytes:
                        self._send(sender, batch)
                        batch = _Batch()
                    batch.add_row(encoded, key)
                if len(batch) < self._max_batch_events and time.monotonic() - batch.started < self._flush_interval_s:
                    continue
            if batch:
                self._send(sender, batch)
                batch = _Batch()
            self._report_ledger(sender)

    def _next(self, timeout_s: float) -> object:
        """The next queued item, waiting up to ``timeout_s``; queue.Empty if none came."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._buffer.popleft()
            except IndexError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise queue.Empty
            self._wake.wait(remaining)
            self._wake.clear()

    def _encode(self, event: object) -> bytes | None:
        try:
            encoded = encode_event(event)  # type: ignore[arg-type]
        except Exception as exc:  # any failure to serialise a host object is counted, not raised
            self._drop("unencodable")
            if self._debug:
                raise
            log.debug("unencodable event: %s", type(exc).__name__)
            return None
        if len(encoded) + 2 > self._max_batch_bytes:
            self._drop("oversize")
            return None
        return encoded

    def _send(self, sender: KafkaSender, batch: _Batch) -> None:
        for value, keys in batch.records(self._max_batch_bytes):
            self._send_record(sender, value, keys)

    def _send_record(self, sender: KafkaSender, value: bytes, keys: list[tuple[str, str, int] | None]) -> None:
        try:
            sender.send(value)
        except SendFailed as exc:
            self._drop("send_failed", len(keys))
            if self._debug:
                raise
            log.debug("emitter record failed after %d attempts", exc.attempts)
            return
        with self._stats_lock:
            self._stats["sent_events"] += len(keys)
            self._stats["sent_records"] += 1
        if self._ledger_topic:
            self.ledger.delivered(keys)

    def _report_ledger(self, sender: KafkaSender, *, force: bool = False) -> None:
        """Send the ledger's changed counts to the ledger topic (every interval, and on flush and close)."""
        if not self._ledger_topic or not (self.ledger.due() or (force and self.ledger.pending)):
            return
        entries = self.ledger.report()
        try:  # a short deadline: the ledger must never hold up usage records
            sender.send(to_json(entries), topic=self._ledger_topic, deadline=time.monotonic() + LEDGER_DEADLINE_S)
        except SendFailed:
            self.ledger.unreported(entries)  # counts are cumulative: the next report carries them
            log.debug("emitter ledger report failed; it will be sent with the next one")


def _value(counter: itertools.count) -> int:
    """How far an itertools.count has counted, without advancing it."""
    return counter.__reduce__()[1][0]


def _weak_call(obj: Emitter, method: Any) -> Any:
    ref = weakref.ref(obj)

    def call() -> None:
        target = ref()
        if target is not None:
            method(target)

    return call
