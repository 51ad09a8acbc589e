"""Shared fixtures: a real Kafka-protocol broker (tansu) and a real ClickHouse engine (chdb).

chdb lets a process open one data directory, once: tests in this process share
one embedded store (``embedded_store``) and isolate themselves by table contents;
tests that need their own directory run a worker in a child process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendstream.localbroker import LocalBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a tansu broker started for this test session and stopped after it."""
    local = LocalBroker()
    local.start()
    try:
        yield local.bootstrap_servers
    finally:
        local.stop()


@pytest.fixture(scope="session")
def embedded_store(tmp_path_factory: pytest.TempPathFactory):
    from spendstream.sinks.embedded import EmbeddedStore
    from spendstream.sinks.migrations import migrate

    store = EmbeddedStore(tmp_path_factory.mktemp("chdb"))
    migrate(store)
    yield store
    store.close()


@pytest.fixture
def topic() -> str:
    return f"test.usage.{uuid.uuid4().hex[:10]}"


def consume_all(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0) -> list[bytes]:
    """Read record values from ``topic`` until ``expect`` records arrived or the timeout passed."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> list[bytes]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        values: list[bytes] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while len(values) < expect and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    values.extend(r.value for r in records)
        finally:
            await consumer.stop()
        return values

    return asyncio.run(run())


def produce_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Send record values as they are (for malformed input that the emitter would never produce)."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()

    asyncio.run(run())


def worker_settings(data_dir: Path, topic: str, **overrides: object):
    from spendstream.settings import Settings

    return Settings(data_dir=data_dir, usage_topic=topic, gpu_topic=f"{topic}.gpu", consumer_group=f"g-{topic}",
                    topic_partitions=2, **overrides)
