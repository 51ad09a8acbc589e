"""The same end-to-end path against Apache Kafka and a ClickHouse server, in containers.

Runs where a Docker engine answers; elsewhere every test here is skipped, saying why.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest

from spendstream.schemas import UsageEvent


def _docker_unavailable_reason() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # any failure to reach an engine means: skip, and say why
        return f"no Docker engine answers ({type(exc).__name__}): testcontainers cannot start Kafka and ClickHouse"
    return None


REASON = _docker_unavailable_reason()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def kafka_bootstrap():
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("apache/kafka:3.9.1") as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="module")
def clickhouse_url():
    from testcontainers.clickhouse import ClickHouseContainer

    with ClickHouseContainer("clickhouse/clickhouse-server:25.8", username="spend", password="stream",
                             dbname="spendstream") as ch:
        yield f"http://spend:stream@{ch.get_container_host_ip()}:{ch.get_exposed_port(8123)}/spendstream"


def test_end_to_end_against_kafka_and_clickhouse_server(kafka_bootstrap, clickhouse_url, tmp_path) -> None:
    from spendstream.demo.worker_process import WorkerProcess
    from spendstream.emitter import Emitter
    from spendstream.kafka_admin import ensure_topics
    from spendstream.settings import Settings
    from spendstream.sinks.server import ServerStore

    topic = f"usage.{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, clickhouse_url=clickhouse_url, usage_topic=topic,
                        consumer_group=f"g-{topic}", data_dir=tmp_path)
    ensure_topics(kafka_bootstrap, {topic: settings.topic_partitions})
    with WorkerProcess(settings, bootstrap_servers=kafka_bootstrap, log_path=tmp_path / "worker.log"):
        with Emitter(bootstrap_servers=kafka_bootstrap, topic=topic, register_atexit=False) as emitter:
            for n in range(300):
                emitter.emit(UsageEvent(event_id=f"{topic}-{n}", provider="openai", model="gpt-4o",
                                        input_tokens=100, output_tokens=10))
            emitter.emit({"event_id": f"{topic}-bad", "ts": "2026-01-01T00:00:00Z", "provider": "openai",
                          "model": "gpt-4o", "input_tokens": "lots"})
            assert emitter.flush(60)
        store = ServerStore(clickhouse_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stored = store.query("SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, {t:String})",
                                 {"t": topic}).scalar()
            if stored >= 300:
                break
            time.sleep(1)
        assert stored == 300
        dead = store.query("SELECT reason FROM dead_letters WHERE event_id = {e:String}", {"e": f"{topic}-bad"})
        assert "input_tokens" in dead.scalar()
        store.close()


def _settings(kafka_bootstrap: str, clickhouse_url: str, tmp_path, topic: str):
    from spendstream.settings import Settings

    return Settings(kafka_bootstrap=kafka_bootstrap, clickhouse_url=clickhouse_url, usage_topic=topic,
                    gpu_topic=f"{topic}.gpu", consumer_group=f"g-{topic}", data_dir=tmp_path, topic_partitions=4)


def _wait_count(store, sql: str, params: dict, expected: int, timeout_s: float = 180) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        value = int(store.query(sql, params).scalar())
        if value >= expected or time.monotonic() > deadline:
            return value
        time.sleep(1)


def test_two_workers_share_the_partitions_and_a_rebalance_loses_nothing(kafka_bootstrap, clickhouse_url,
                                                                       tmp_path) -> None:
    from spendstream.demo.worker_process import WorkerProcess
    from spendstream.emitter import Emitter
    from spendstream.kafka_admin import ensure_topics
    from spendstream.sinks.server import ServerStore

    topic = f"usage.{uuid.uuid4().hex[:8]}"
    settings = _settings(kafka_bootstrap, clickhouse_url, tmp_path, topic)
    ensure_topics(kafka_bootstrap, {topic: settings.topic_partitions, settings.gpu_topic: 1})
    store = ServerStore(clickhouse_url)
    sql = "SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, {t:String})"
    with WorkerProcess(settings, bootstrap_servers=kafka_bootstrap, log_path=tmp_path / "w1.log"), \
            Emitter(bootstrap_servers=kafka_bootstrap, topic=topic, register_atexit=False) as emitter:
        second = WorkerProcess(settings, bootstrap_servers=kafka_bootstrap, log_path=tmp_path / "w2.log")
        for n in range(2_000):
            emitter.emit(UsageEvent(event_id=f"{topic}-{n}", provider="openai", model="gpt-4o-mini",
                                    input_tokens=1_000, output_tokens=100))
            if n == 500:
                second.start()  # a rebalance in the middle of the load
            if n == 1_500:
                assert second.stop() == 0  # and another one
        assert emitter.flush(60)
        assert _wait_count(store, sql, {"t": topic}, 2_000) == 2_000
    total = store.query("SELECT sum(total_cost) FROM usage_events FINAL WHERE startsWith(event_id, {t:String})",
                        {"t": topic}).scalar()
    assert total == 2_000 * (1_000 * Decimal("0.15") + 100 * Decimal("0.6")) / 1_000_000
    store.close()


def test_the_views_and_the_cookbook_run_on_a_clickhouse_server(clickhouse_url) -> None:
    from spendstream.sinks.migrations import migrate
    from spendstream.sinks.server import ServerStore
    from tests.test_sql_cookbook import EXAMPLES

    store = ServerStore(clickhouse_url)
    migrate(store)
    for title, columns, params, sql in EXAMPLES:
        assert store.query(sql.strip(), params).columns == columns, title
    store.close()


def test_reads_on_a_clickhouse_server_are_read_only_as_the_server_enforces_it(clickhouse_url) -> None:
    from spendstream.sinks.migrations import migrate
    from spendstream.sinks.readonly import WriteRefused
    from spendstream.sinks.server import ServerStore
    from spendstream.sinks.store import StoreError

    store = ServerStore(clickhouse_url)
    migrate(store)
    try:
        assert store.run_statement("SELECT 1", fmt="CSV") == b"1\n"
        for sql in ("CREATE TABLE scratch (a Int8) ENGINE = Memory", "ALTER TABLE usage_events DELETE WHERE 1",
                    "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
                    "SELECT * FROM remote('127.0.0.1:9', system.one)"):
            with pytest.raises(WriteRefused, match="READONLY"):
                store.run_statement(sql)
        with pytest.raises(StoreError, match="[Mm]ulti-statements are not allowed"):
            store.run_statement("SELECT 1; CREATE TABLE scratch (a Int8) ENGINE = Memory")
        assert store.run_statement("EXISTS TABLE scratch", fmt="CSV") == b"0\n"
    finally:
        store.close()


def test_a_wrong_clickhouse_password_stops_start_up_at_once(clickhouse_url, tmp_path) -> None:
    """The real server's answer to a wrong password, which tests/test_startup.py imitates without Docker."""
    from spendstream.settings import Settings
    from spendstream.startup import Startup, StartupError, open_migrated_store

    wrong = clickhouse_url.replace(":stream@", ":not-the-password@")
    started = time.monotonic()
    with pytest.raises(StartupError, match="Authentication failed|AUTHENTICATION_FAILED") as failed:
        open_migrated_store(Startup(timeout_s=300), Settings(clickhouse_url=wrong, data_dir=tmp_path))
    assert time.monotonic() - started < 10 and "not-the-password" not in str(failed.value)
