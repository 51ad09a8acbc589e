"""The emitter's sender thread: take what emit() queued, pack it into records, send them, account for each event."""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from pydantic_core import to_json

from spendstream.emitter.batch import Batch, Record
from spendstream.emitter.encoding import blockable, encode_event
from spendstream.emitter.handoff import Flush, Handoff, Marker, Stop
from spendstream.emitter.ledger import Ledger, event_key
from spendstream.emitter.sender import KafkaSender, SendAborted, SenderConfig, SendFailed
from spendstream.emitter.tally import Tally

log = logging.getLogger(__name__)

LEDGER_DEADLINE_S = 5.0  # a short deadline: the ledger must never hold up usage records


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How much the emitter may hold, and how it cuts records."""

    max_queue_events: int
    max_buffer_bytes: int
    max_batch_events: int
    max_batch_bytes: int
    flush_interval_s: float


class Delivery:
    """Everything the sender thread does, from taking events off the handoff to their last counter.

    Events it has taken wait in the batch being filled, then as encoded records in
    ``ready`` (markers among them, in order) until each is sent. It keeps taking
    events while a send waits on the broker, so in an outage what waits is encoded
    records, counted in bytes, not the host's objects. It sets the handoff's room
    from what it holds: room for ``max_queue_events`` events in all, and none once
    it holds ``max_buffer_bytes`` encoded bytes. Block events are encoded when their
    batch is sealed, so the bytes bound can be passed by one batch being filled.

    Every event it takes ends in exactly one tally counter: sent, or dropped with a
    reason. An exception never ends the thread: a failing event costs that event
    (``unencodable``); a failure of the loop itself costs what was held then
    (``send_failed``); both are counted, logged by exception type, and it goes on.
    """

    def __init__(self, *, handoff: Handoff, tally: Tally, limits: Limits, sender_config: SenderConfig,
                 ledger: Ledger, ledger_topic: str | None, debug: bool) -> None:
        self.handoff = handoff
        self.tally = tally
        self.limits = limits
        self.sender_config = sender_config
        self.ledger = ledger
        self.ledger_topic = ledger_topic
        self.debug = debug
        self.held_events = 0  # taken, not yet sent or dropped; written by the sender thread only
        self.held_bytes = 0  # encoded bytes of those: sealed records, and the batch's rows
        self.first_error: BaseException | None = None  # kept with debug=True, raised by flush()/close()
        self.finished = threading.Event()  # set once every event taken is accounted for
        self._intake: collections.deque[object] = collections.deque()  # taken from the handoff, not yet handled
        self._batch = Batch()
        self._ready: collections.deque[Record | Marker] = collections.deque()
        self._bytes_full = False  # held bytes reached the bound and have not yet fallen a record below it
        self._stopping = False  # a Stop marker was taken: what comes after it is not sent
        self._abandoned = False
        self._sender: KafkaSender | None = None

    def run(self) -> None:
        """The thread's body: serve until a Stop marker or :meth:`abandon`, then count what is left as shutdown."""
        self._sender = KafkaSender(self.sender_config)
        try:
            while True:
                try:
                    self._serve(self._sender)
                    return
                except Exception as exc:  # a bug of ours: lose what is held, counted, rather than the thread
                    self._drop_held("send_failed", exc)
        finally:
            self._drop_held("shutdown", None)
            self.finished.set()
            self._sender.close()

    def abandon(self) -> None:
        """Stop sending now, even mid-record; what is held is counted as shutdown. Thread-safe."""
        self._abandoned = True  # before reading _sender: run() sets _sender before its first look at this flag
        if self._sender is not None:
            self._sender.interrupt()
        self.handoff.wake.set()

    def _serve(self, sender: KafkaSender) -> None:
        while True:
            self._absorb()
            if self._abandoned:
                return
            if not self._ready:
                self._report_ledger(sender, force=False)
                self._wait()
                continue
            item = self._ready.popleft()
            if isinstance(item, Record):
                self._send(sender, item)
                self._report_ledger(sender, force=False)  # when due: a backlog must not hold up the ledger
                continue
            try:
                self._report_ledger(sender, force=True)
            finally:
                if isinstance(item, Flush):
                    item.done.set()
            if isinstance(item, Stop):
                return

    def _absorb(self) -> None:
        """Take everything queued; seal the batch when full or due. Runs between sends and while one waits."""
        limits = self.limits
        intake = self._intake  # kept on self: if handling one item fails, the rest are not lost with the frame
        intake.extend(self.handoff.take(reserve=True))
        while intake:
            item = intake.popleft()
            if isinstance(item, Marker):
                self._seal()
                self._ready.append(item)
                self._stopping = self._stopping or isinstance(item, Stop)
            elif self._stopping:
                self.tally.dropped("shutdown")
            elif self.held_events >= limits.max_queue_events or self.held_bytes >= limits.max_buffer_bytes:
                self._full()  # host threads raced past the room, or bytes filled up behind it
            else:
                self._accept(item)
        if self._batch and time.monotonic() - self._batch.started >= limits.flush_interval_s:
            self._seal()
        self._publish_room()

    def _accept(self, event: object) -> None:
        limits = self.limits
        try:
            key = event_key(event) if self.ledger_topic else None  # type: ignore[arg-type]
            encoded = None if blockable(event) else encode_event(event)  # type: ignore[arg-type]
        except Exception as exc:  # any failure to key or serialise a host object costs that event only
            self._failed("unencodable", 1, exc)
            return
        if encoded is None:
            self._batch.add_to_block(event, key)  # type: ignore[arg-type]
        elif len(encoded) + 2 > limits.max_batch_bytes:
            self.tally.dropped("oversize")
            return
        elif self.held_bytes + len(encoded) + 1 > limits.max_buffer_bytes:
            self._full()
            return
        else:
            if not self._batch.row_fits(len(encoded), limits.max_batch_bytes):
                self._seal()
            self._batch.add_row(encoded, key)
            self.held_bytes += len(encoded) + 1
        self.held_events += 1
        if len(self._batch) >= limits.max_batch_events:
            self._seal()

    def _seal(self) -> None:
        batch, self._batch = self._batch, Batch()
        if not batch:
            return
        sealed = batch.seal(self.limits.max_batch_bytes)
        self.held_bytes -= batch.rows_size
        self.held_events -= sealed.unencodable + sealed.oversize
        self._failed("unencodable", sealed.unencodable, sealed.first_error)
        self.tally.dropped("oversize", sealed.oversize)
        for record in sealed.records:
            self.held_bytes += len(record.value)
            self._ready.append(record)

    def _send(self, sender: KafkaSender, record: Record) -> None:
        events = len(record.keys)
        try:
            sender.send(record.value, on_wait=self._absorb)
        except SendAborted as exc:
            self._failed("shutdown", events, exc)
        except Exception as exc:  # SendFailed, or anything else: the record is lost, the thread goes on
            self._failed("send_failed", events, exc)
        else:
            self.tally.sent(events=events)
            if self.ledger_topic:
                self.ledger.delivered(record.keys)
        finally:
            self.held_events -= events
            self.held_bytes -= len(record.value)
            self._publish_room()

    def _report_ledger(self, sender: KafkaSender, *, force: bool) -> None:
        """Send the ledger's changed counts to the ledger topic (every interval, and on flush and close)."""
        if not self.ledger_topic or not (self.ledger.due() or (force and self.ledger.pending)):
            return
        entries = self.ledger.report()
        try:
            sender.send(to_json(entries), topic=self.ledger_topic, deadline=time.monotonic() + LEDGER_DEADLINE_S,
                        on_wait=self._absorb)
        except SendFailed:
            self.ledger.unreported(entries)  # counts are cumulative: the next report carries them
            log.debug("emitter ledger report failed; it will be sent with the next one")

    def _wait(self) -> None:
        """Until something is queued, or the batch is due (at the latest one flush interval, for the ledger)."""
        interval_s = self.limits.flush_interval_s
        timeout_s = max(self._batch.started + interval_s - time.monotonic(), 0) if self._batch else interval_s
        if self.handoff.wake.wait(timeout_s):
            self.handoff.wake.clear()  # before the next take(): a wake-up set after this is not lost

    def _full(self) -> None:
        """Drop the event in hand as queue_full, and have emit() refuse the next ones itself at once."""
        self.tally.dropped("queue_full")
        if self.held_bytes >= self.limits.max_buffer_bytes - self.limits.max_batch_bytes:
            self._bytes_full = True
        self.handoff.room = 0  # _publish_room() sets it again when this absorb ends

    def _publish_room(self) -> None:
        limits = self.limits
        if self.held_bytes >= limits.max_buffer_bytes:
            self._bytes_full = True
        elif self.held_bytes <= limits.max_buffer_bytes - limits.max_batch_bytes:
            self._bytes_full = False  # a record's worth is free again: not before, or emit() would flap
        room = limits.max_queue_events - self.held_events
        self.handoff.room = room if room > 0 and not self._bytes_full else 0

    def _drop_held(self, reason: str, cause: BaseException | None) -> None:
        """Count everything held as dropped for ``reason``; release flush waiters."""
        lost = len(self._batch)
        self._batch = Batch()
        for item in self._ready:  # sealed records, and markers
            if isinstance(item, Record):
                lost += len(item.keys)
            elif isinstance(item, Flush):
                item.done.set()
        for item in self._intake:  # taken, not yet handled: events, and markers
            if isinstance(item, Flush):
                item.done.set()
            elif not isinstance(item, Marker):
                lost += 1
        self._ready.clear()
        self._intake.clear()
        self.held_events = self.held_bytes = 0
        self._failed(reason, lost, cause)
        self._publish_room()

    def _failed(self, reason: str, events: int, cause: BaseException | None) -> None:
        self.tally.dropped(reason, events, cause=cause)
        if events and self.debug and cause is not None and self.first_error is None:
            self.first_error = cause
