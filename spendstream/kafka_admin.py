"""Small synchronous Kafka admin helpers for the CLI and tests (aiokafka underneath)."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    BrokerNotAvailableError,
    InvalidReplicationFactorError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)

log = logging.getLogger(__name__)


def broker_answers(bootstrap_servers: str, *, timeout_s: float = 2.0) -> bool:
    """True if the broker answers a metadata request within ``timeout_s``."""

    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False  # not listening yet: no need to make aiokafka log a connection error

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            return True
        except (KafkaError, OSError, asyncio.TimeoutError):
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


def ensure_topics(bootstrap_servers: str, topics: dict[str, int], *, replication_factor: int = 1,
                  timeout_s: float = 40.0) -> None:
    """Create each topic with its partition count unless it exists; raise the broker's error if it refuses.

    Partition counts are fixed here, at creation: some brokers (tansu) cannot add
    partitions later, and the number of partitions caps the number of workers.
    ``timeout_s`` bounds each request and the whole call (``asyncio.TimeoutError``).
    """

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(name, partitions, replication_factor) for name, partitions in topics.items()
                       if name not in existing]
            if missing:
                response = await admin.create_topics(missing)
                # aiokafka returns per-topic errors instead of raising them: a topic the broker
                # refused would otherwise go unnoticed until nothing arrives on it.
                for topic, code, *message in response.topic_errors:
                    if code and for_code(code) is not TopicAlreadyExistsError:  # created meanwhile by another process
                        raise for_code(code)(f"cannot create topic {topic}: {message[0] if message else ''}")
        finally:
            await admin.close()

    asyncio.run(asyncio.wait_for(create(), timeout_s))


def transient(exc: BaseException) -> bool:
    """True when a Kafka failure means "not there yet" and trying again may succeed: no connection,
    a timeout, a broker still starting or electing a controller. False for refusals waiting
    cannot fix (authentication, authorization, an invalid request)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    # InvalidReplicationFactor: a KRaft broker refuses topics until it has registered itself.
    return isinstance(exc, KafkaError) and (
        exc.retriable or isinstance(exc, (KafkaTimeoutError, BrokerNotAvailableError, InvalidReplicationFactorError)))
