"""The emitter a service embeds: ``emit()`` never blocks and never raises."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from spendstream.emitter.delivery import Delivery, Limits
from spendstream.emitter.handoff import Flush, Handoff, Marker, Stop
from spendstream.emitter.ledger import Ledger
from spendstream.emitter.sender import SenderConfig
from spendstream.emitter.tally import DROP_REASONS, Tally

__all__ = ["DROP_REASONS", "Emitter", "Event"]

Event = BaseModel | Mapping[str, Any]

# After close()'s deadline the sender is told to stop; counting what it held takes it
# a moment (no I/O), and close() waits this long for that so its counts are final.
_ACCOUNT_GRACE_S = 2.0


class Emitter:
    """Buffers usage events and sends them to Kafka in batches from one thread.

    ``emit()`` appends the event to a bounded buffer without waiting, or drops it
    and counts why. A background thread packs events into Kafka records (many
    events per record, bounded by ``max_batch_events`` and ``max_batch_bytes``),
    sends one when it is full or ``flush_interval_s`` has passed, and retries with
    jittered backoff until ``delivery_timeout_s``.

    The buffer holds at most ``max_queue_events`` events and ``max_buffer_bytes``
    bytes of encoded events (the thread encodes what it takes, also while a send
    waits on the broker; block events when their batch is sealed, so one batch
    being filled may pass the byte bound). Beyond either, events are dropped as
    ``queue_full``.

    Every event given to ``emit()`` ends in exactly one counter of :meth:`stats`:
    ``sent_events`` or ``dropped_<reason>``. A failure of one event (it cannot be
    keyed or serialised) costs that event only; the thread never dies of an
    exception. The thread starts on the first ``emit()`` (no I/O in the
    constructor) and afresh in a child after ``fork``. Errors become counters and a
    rate-limited log line; with ``debug=True`` the first exception behind a drop is
    also raised by the next ``flush()`` or ``close()``, for tests.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str = "spendstream.usage",
        max_queue_events: int = 100_000,
        max_buffer_bytes: int = 32 * 1024 * 1024,
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
        if max_buffer_bytes < max_batch_bytes:
            raise ValueError(f"max_buffer_bytes ({max_buffer_bytes}) must be at least max_batch_bytes "
                             f"({max_batch_bytes}): the buffer has to hold one full record")
        if min(max_queue_events, max_batch_events) < 1:
            raise ValueError("max_queue_events and max_batch_events must be at least 1")
        self._limits = Limits(max_queue_events=max_queue_events, max_buffer_bytes=max_buffer_bytes,
                              max_batch_events=max_batch_events, max_batch_bytes=max_batch_bytes,
                              flush_interval_s=flush_interval_s)
        self._sender_config = SenderConfig(
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            client_id=client_id,
            delivery_timeout_s=delivery_timeout_s,
            max_request_bytes=max_batch_bytes + 64 * 1024,
        )
        self._max_batch_events = max_batch_events
        self._ledger_topic = ledger_topic
        self._ledger_interval_s = ledger_interval_s
        self._debug = debug
        self._closed = False
        self._reset_after_fork()
        if register_atexit:
            ref = weakref.ref(self)
            atexit.register(lambda: (e := ref()) and e.close())
        os.register_at_fork(after_in_child=_weak_call(self, Emitter._reset_after_fork))

    # -- host-facing API ------------------------------------------------------

    def emit(self, event: Event) -> bool:
        """Queue ``event`` for sending without waiting. False if it was dropped instead (counted by reason).

        Never raises. A queued event ends as sent or as a counted drop, never unaccounted.
        """
        if self._closed:
            self._tally.dropped("shutdown")
            return False
        if self._thread is None and not self._start_thread():
            return False
        handoff = self._handoff
        items = handoff.items
        if len(items) >= handoff.room:  # room: the sender's count of what more it may hold, by events and bytes
            self._tally.dropped("queue_full")
            return False
        items.append(event)  # deque.append is atomic; no lock and no counter on the host's path
        queued = len(items)
        if queued == 1 or queued >= self._max_batch_events:
            handoff.wake.set()  # the sender was idle, or a full batch waits: wake it (under load, neither happens)
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every event emitted so far is sent or counted as dropped. False if ``timeout_s`` passed first."""
        if self._delivery is None or self._closed:
            self._raise_in_debug()
            return True  # nothing was emitted, or close() has accounted for everything
        marker = Flush()
        self._handoff.put_marker(marker)
        done = marker.done.wait(timeout_s)
        self._raise_in_debug()
        return done

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is held and stop, within ``timeout_s``. Idempotent. Later emits are dropped as ``shutdown``.

        What is not sent by then — still queued, or in the record being sent — is
        counted as ``dropped_shutdown``: when close() returns, every event ever given
        to ``emit()`` is in ``sent_events`` or a ``dropped_*`` counter. Past the
        deadline, close() waits at most ``_ACCOUNT_GRACE_S`` more for the sender to
        stop and count (no I/O: it takes milliseconds).
        """
        if self._closed:
            return
        self._closed = True
        delivery = self._delivery
        if delivery is not None:
            self._handoff.put_marker(Stop())
            if not delivery.finished.wait(timeout_s):
                delivery.abandon()
                delivery.finished.wait(_ACCOUNT_GRACE_S)
        # Events no sender will take: emitted after the Stop marker by a host thread that
        # passed the closed check just before close() set it, or queued when there is no sender.
        for item in self._handoff.take(reserve=False):
            if isinstance(item, Flush):
                item.done.set()
            elif not isinstance(item, Marker):
                self._tally.dropped("shutdown")
        self._raise_in_debug()

    def stats(self) -> dict[str, int]:
        """Counters of this emitter in this process.

        ``enqueued``: events ``emit()`` accepted. ``sent_events``, ``sent_records``:
        what Kafka acknowledged. ``dropped_<reason>`` for every reason in
        ``DROP_REASONS``, whether ``emit()`` refused the event or it was lost later.
        ``buffered_events``, ``buffered_bytes``: held now (queued, or taken by the
        sender and not yet sent), and the encoded bytes of those the sender has encoded.

        Each ``emit()`` call ends in exactly one of ``sent_events`` and the
        ``dropped_*`` counters; once nothing is buffered (after ``flush()`` returned
        True, or ``close()``): calls to emit() == sent_events + sum of dropped_*.
        """
        out = {"enqueued": self._handoff.accepted()} | self._tally.snapshot()
        delivery = self._delivery
        out["buffered_events"] = self._handoff.waiting() + (delivery.held_events if delivery else 0)
        out["buffered_bytes"] = delivery.held_bytes if delivery else 0
        return out

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        # A child inherits the parent's buffer, counters, ledger and a thread that does not
        # exist there. The parent still sends what it buffered and reports its own ledger:
        # the child starts empty, with its own counts and ledger id, and a thread made on demand.
        self._handoff = Handoff(room=self._limits.max_queue_events)
        self._tally = Tally()
        self.ledger = Ledger(interval_s=self._ledger_interval_s)
        self._delivery: Delivery | None = None
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def _start_thread(self) -> bool:
        with self._thread_lock:
            if self._thread is None:
                delivery = Delivery(handoff=self._handoff, tally=self._tally, limits=self._limits,
                                    sender_config=self._sender_config, ledger=self.ledger,
                                    ledger_topic=self._ledger_topic, debug=self._debug)
                # The thread's target holds the emitter: a host that drops its last reference still
                # gets close() at exit (the atexit hook holds the emitter only weakly).
                thread = threading.Thread(target=self._run, args=(delivery,), name="spendstream-emitter", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # no new threads (e.g. at interpreter exit): nothing could send it
                    self._tally.dropped("shutdown", cause=exc)
                    return False
                self._delivery, self._thread = delivery, thread
        return True

    def _run(self, delivery: Delivery) -> None:
        delivery.run()

    def _raise_in_debug(self) -> None:
        delivery = self._delivery
        if self._debug and delivery is not None and delivery.first_error is not None:
            error, delivery.first_error = delivery.first_error, None
            raise error


def _weak_call(obj: Emitter, method: Any) -> Any:
    ref = weakref.ref(obj)

    def call() -> None:
        target = ref()
        if target is not None:
            method(target)

    return call
