"""The Kafka side of the emitter: one producer, used only from the emitter's thread."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from spendstream.emitter.backoff import backoff_s

log = logging.getLogger(__name__)


class SendFailed(Exception):
    """A record could not be delivered before its deadline; it will not be retried."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


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
    delivery deadline passes.
    """

    def __init__(self, config: SenderConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._producer: AIOKafkaProducer | None = None

    def send(self, value: bytes, *, deadline: float | None = None, topic: str | None = None) -> None:
        """Deliver ``value`` (acks=all) to the topic (or ``topic``) or raise :class:`SendFailed`."""
        deadline = deadline or time.monotonic() + self._config.delivery_timeout_s
        self._loop.run_until_complete(self._send(value, deadline, topic or self._config.topic))

    def wait_s(self, seconds: float) -> None:
        """Sleep on the private loop, letting the producer's background tasks run."""
        self._loop.run_until_complete(asyncio.sleep(seconds))

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
