"""The Kafka side of the emitter: one producer, used only from the emitter's thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from spendstream.emitter.backoff import backoff_s

log = logging.getLogger(__name__)

# How often the caller's ``on_wait`` runs while a send waits on the broker.
WAIT_TICK_S = 0.05


class SendFailed(Exception):
    """A record could not be delivered before its deadline, or failed in a way retrying cannot fix; not retried."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class SendAborted(SendFailed):
    """:meth:`KafkaSender.interrupt` gave up on this record before Kafka acknowledged it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderConfig:
    bootstrap_servers: str
    topic: str
    client_id: str = "spendstream-emitter"
    delivery_timeout_s: float = 300.0
    request_timeout_s: float = 10.0
    retry_base_s: float = 0.1
    retry_cap_s: float = 5.0
    max_request_bytes: int = 1_048_576


class KafkaSender:
    """Sends record values to one topic, retrying with backoff until a deadline.

    Runs its coroutines on a private event loop owned by the emitter's thread
    (``loop.run_until_complete``), so the host's own loop, if any, is never touched.
    Broker errors and timeouts are retried; the record is given up only when its
    delivery deadline passes. Any other exception is not retried: it becomes
    :class:`SendFailed` at once. Only :meth:`interrupt` may be called from another thread.
    """

    def __init__(self, config: SenderConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._producer: AIOKafkaProducer | None = None
        self._current: asyncio.Task[None] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._interrupted = threading.Event()

    def send(self, value: bytes, *, deadline: float | None = None, topic: str | None = None,
             on_wait: Callable[[], None] | None = None) -> None:
        """Deliver ``value`` (acks=all) to the topic (or ``topic``) or raise :class:`SendFailed`.

        While the send waits on the broker, ``on_wait`` runs every ``WAIT_TICK_S`` on
        this thread; it must not raise (what it raises is logged by type and ignored).
        Raises :class:`SendAborted` once :meth:`interrupt` was called.
        """
        deadline = deadline or time.monotonic() + self._config.delivery_timeout_s
        task = self._loop.create_task(self._send(value, deadline, topic or self._config.topic))
        self._current = task
        if self._interrupted.is_set():  # checked after _current is set: see interrupt()
            task.cancel()
        if on_wait is not None:
            self._ticker = self._loop.call_later(WAIT_TICK_S, self._tick, on_wait)
        try:
            self._loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise SendAborted("interrupted before Kafka acknowledged the record", attempts=0) from None
        finally:
            self._current = None
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None

    def interrupt(self) -> None:
        """Abort the send in progress and every later one (thread-safe; for close() past its deadline)."""
        self._interrupted.set()
        try:
            # Runs on the sender's loop: it cancels the task that send() set before it looked at the flag,
            # so a send either sees the flag or is cancelled here.
            self._loop.call_soon_threadsafe(self._cancel_current)
        except RuntimeError:  # the loop is already closed: nothing is being sent
            pass

    def wait_s(self, seconds: float) -> None:
        """Sleep on the private loop, letting the producer's background tasks run."""
        self._loop.run_until_complete(asyncio.sleep(seconds))

    def _cancel_current(self) -> None:
        if self._current is not None:
            self._current.cancel()

    def _tick(self, on_wait: Callable[[], None]) -> None:
        try:
            on_wait()
        except Exception as exc:  # the caller's work must not end the send; the caller accounts for its own items
            log.warning("emitter: work done while waiting on the broker failed: %s", type(exc).__name__)
        self._ticker = self._loop.call_later(WAIT_TICK_S, self._tick, on_wait)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._producer is not None:
            try:
                self._loop.run_until_complete(asyncio.wait_for(self._producer.stop(), timeout_s))
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                log.warning("emitter producer did not stop cleanly: %s", type(exc).__name__)
            self._producer = None
        self._loop.close()

    async def _send(self, value: bytes, deadline: float, topic: str) -> None:
        attempt = 0
        while True:
            try:
                producer = await self._started_producer()
                remaining = max(deadline - time.monotonic(), 0.001)
                await asyncio.wait_for(producer.send_and_wait(topic, value), remaining)
                return
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                attempt += 1
                await self._reset_producer()
                delay = backoff_s(attempt - 1, base_s=self._config.retry_base_s, cap_s=self._config.retry_cap_s)
                if time.monotonic() + delay >= deadline:
                    raise SendFailed(f"gave up after {attempt} attempts: {exc!r}", attempts=attempt) from exc
                log.debug("emitter send attempt %d failed (%s); retrying in %.2fs", attempt, type(exc).__name__, delay)
                await asyncio.sleep(delay)
            except Exception as exc:  # not a broker error: retrying would fail the same way
                await self._reset_producer()
                raise SendFailed(f"not retryable: {type(exc).__name__}", attempts=attempt + 1) from exc

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._config.bootstrap_servers,
                client_id=self._config.client_id,
                acks="all",
                request_timeout_ms=int(self._config.request_timeout_s * 1000),
                max_request_size=self._config.max_request_bytes,
                linger_ms=0,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except (KafkaError, OSError) as exc:
                log.debug("ignoring error while stopping a failed producer: %r", exc)
