"""Small synchronous Kafka admin helpers for the CLI and tests (aiokafka underneath)."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

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


def ensure_topics(bootstrap_servers: str, topics: dict[str, int], *, replication_factor: int = 1) -> None:
    """Create each topic with its partition count unless it exists.

    Partition counts are fixed here, at creation: some brokers (tansu) cannot add
    partitions later, and the number of partitions caps the number of workers.
    """

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [NewTopic(name, partitions, replication_factor) for name, partitions in topics.items()
                       if name not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass  # another process created it between our list and create
        finally:
            await admin.close()

    asyncio.run(create())
