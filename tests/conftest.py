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


def events_in(value: bytes) -> list[dict]:
    """The events a record carries, whether a block of columns or a JSON array/object of events."""
    import orjson

    from spendstream.agents.events import block_items

    doc = orjson.loads(value)
    if isinstance(doc, dict) and "block" in doc:
        items = block_items(value)
        assert not isinstance(items, str), items
        return [item for _, item in items]
    return doc if isinstance(doc, list) else [doc]


def consume_all(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0,
                idle_s: float | None = None) -> list[bytes]:
    """Read record values from ``topic`` until ``expect`` records arrived or the timeout passed.

    With ``idle_s``, keep reading past ``expect`` until nothing new came for ``idle_s`` seconds.
    """
    from aiokafka import AIOKafkaConsumer

    async def run() -> list[bytes]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        values: list[bytes] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            last_new = loop.time()
            while loop.time() < deadline:
                if len(values) >= expect and (idle_s is None or loop.time() - last_new > idle_s):
                    break
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    values.extend(r.value for r in records)
                    last_new = loop.time()
        finally:
            await consumer.stop()
        return values

    return asyncio.run(run())


def wait_for_count(querier, sql: str, expected: int, timeout_s: float = 60.0) -> int:
    """Poll ``sql`` (a count) until it reaches ``expected`` or the timeout passes; the last value."""
    import time

    from spendstream.sinks.store import query_result

    deadline = time.monotonic() + timeout_s
    while True:
        value = int(query_result(querier, sql).scalar())
        if value >= expected or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


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


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server that records every request it gets (port, paths): reads must never reach it."""
    import http.server
    import threading

    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reached\n")

        do_HEAD = do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()


@pytest.fixture
def worker(broker, topic, tmp_path):
    """A worker process consuming ``topic`` into its own data directory (stopped cleanly after the test)."""
    from spendstream.demo.worker_process import WorkerProcess
    from spendstream.kafka_admin import ensure_topics

    settings = worker_settings(tmp_path / "data", topic)
    ensure_topics(broker, {topic: settings.topic_partitions})
    process = WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log")
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]


@pytest.fixture(scope="session")
def seeded_store(embedded_store):
    """The session store with recent usage with failures and retries, a self-hosted deployment with GPU
    samples, a dead letter, an alert."""
    import uuid
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    import orjson

    from spendstream.agents.stages import process
    from spendstream.batches import SourceRecord
    from spendstream.pricing import Pricer
    from spendstream.pricing.deployments import Deployment
    from spendstream.schemas.alert import Alert
    from spendstream.schemas.gpu import GpuSample
    from spendstream.sinks.rows import alert_table, dead_letter_table, deployment_table, gpu_sample_table, usage_table

    now = datetime.now(timezone.utc).replace(microsecond=0)
    run = uuid.uuid4().hex[:8]
    events = []
    for i in range(40):
        ts = now - timedelta(hours=1 + i % 5) - (timedelta(days=8) if i % 4 == 0 else timedelta(0))
        events.append({"event_id": f"cook-{run}-{i}", "ts": ts.isoformat(), "request_id": f"cook-{run}-r{i // 2}",
                       "attempt": 1 + i % 2, "status": "rate_limited" if i % 7 == 0 else "ok",
                       "provider": "openai" if i % 3 else "self-hosted",
                       "model": "gpt-4o-mini" if i % 3 else "llama-3-70b",
                       "deployment": None if i % 3 else "cook-llama",
                       "team": ["search", "support"][i % 2], "feature": ["summarise", "chat", "rag"][i % 3],
                       "customer": f"c{i % 4}", "input_tokens": 1_000 * (i + 1), "output_tokens": 100 * (i + 1)})
    batch = process([SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())
    embedded_store.insert_arrow("usage_events", usage_table(batch))
    embedded_store.insert_arrow("dead_letters", dead_letter_table(
        process([SourceRecord("usage", 9, 1, b"{not json " + run.encode())], Pricer()).dead_letters))
    embedded_store.insert_arrow("gpu_deployments", deployment_table([Deployment(
        name="cook-llama", gpu_type="L4", gpu_count=1, usd_per_gpu_hour=Decimal("0.8"))]))
    samples = [GpuSample(sample_id=f"cook-{run}-{m}", ts=now - timedelta(hours=2, minutes=-m), interval_s=60,
                         deployment="cook-llama", prompt_tokens_delta=3_000 * m, generation_tokens_delta=500 * m,
                         prompt_tokens_per_s=50.0 * m, generation_tokens_per_s=8.0 * m) for m in range(3)]
    embedded_store.insert_arrow("gpu_samples", gpu_sample_table(samples))
    embedded_store.insert_arrow("alerts", alert_table([Alert(
        kind="unpriced_model", severity="warning", state="firing", subject="provider=self-hosted model=llama-3-70b",
        window_start=now - timedelta(days=1), window_end=now, dedup_key=f"cook-{run}", message="no price",
        created_at=now)]))
    embedded_store.command(
        "INSERT INTO cost_corrections (reprice_id, repriced_at, event_id, ts, old_priced, new_priced, "
        f"old_total_cost, new_total_cost) VALUES ('cook-{run}', now64(3), 'cook-{run}-0', now64(3), 1, 1, 1.5, 1.2)")
    return embedded_store


def run_in_own_process(module: str, function: str, data_dir: Path) -> str:
    """``tests/<module>.py``'s ``function(str(data_dir))`` in a fresh interpreter (chdb opens one data directory
    per process, and the session's shared store is open here); its stdout. Fails the test with its stderr."""
    import subprocess
    import sys

    here = str(Path(__file__).parent)
    check = f"import sys; sys.path.insert(0, {here!r}); import {module}; {module}.{function}({str(data_dir)!r})"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()
