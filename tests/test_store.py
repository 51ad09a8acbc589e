"""The embedded ClickHouse store: schema, exact money, deduplication by event id."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks.migrations import MIGRATIONS, migrate
from spendstream.sinks.rows import dead_letter_table, usage_table
from spendstream.sinks.store import StoreError

pytestmark = pytest.mark.integration


def _batch(prefix: str, n: int, **fields: object):
    events = [{"event_id": f"{prefix}-{i}", "ts": "2026-11-01T12:00:00Z", "provider": "openai",
               "model": "gpt-4o-mini", "input_tokens": 1000 + i, "output_tokens": 7, "team": "search",
               "tags": {"region": "eu"}, "unknown_field": i, **fields} for i in range(n)]
    return process([SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())


def test_migrations_are_idempotent(embedded_store) -> None:
    assert migrate(embedded_store) == []
    versions = embedded_store.query("SELECT version FROM schema_migrations FINAL ORDER BY version").rows
    assert [v[0] for v in versions] == [m.version for m in MIGRATIONS]


def test_rows_round_trip_with_exact_money_and_extras(embedded_store) -> None:
    prefix = uuid.uuid4().hex
    batch = _batch(prefix, 3)
    embedded_store.insert_arrow("usage_events", usage_table(batch))
    result = embedded_store.query(
        "SELECT event_id, tags, extra, total_cost FROM usage_events FINAL "
        "WHERE startsWith(event_id, {p:String}) ORDER BY event_id", {"p": prefix})
    rows = result.dicts()
    assert [r["event_id"] for r in rows] == [f"{prefix}-{i}" for i in range(3)]
    assert rows[0]["tags"] == {"region": "eu"}
    assert orjson.loads(rows[2]["extra"]) == {"unknown_field": 2}
    expected = batch.priced.total_cost.to_pylist()
    assert [r["total_cost"] for r in rows] == expected
    assert all(isinstance(r["total_cost"], Decimal) for r in rows)


def test_redelivered_events_are_stored_once(embedded_store) -> None:
    prefix = uuid.uuid4().hex
    batch = _batch(prefix, 5)
    for _ in range(3):  # e.g. a worker crashed after writing, before committing
        embedded_store.insert_arrow("usage_events", usage_table(batch))
    count, cost = embedded_store.query(
        "SELECT count(), sum(total_cost) FROM usage_events FINAL WHERE startsWith(event_id, {p:String})",
        {"p": prefix}).rows[0]
    assert count == 5
    assert cost == sum(batch.priced.total_cost.to_pylist())



def test_an_insert_larger_than_one_append_arrives_whole(embedded_store) -> None:
    # The embedded insert streams its Arrow IPC to chdb in ~8 MB appends; 30 MB takes several.
    import pyarrow as pa

    prefix = uuid.uuid4().hex
    n = 30_000
    raw = [f"{i:05d}".encode() * 200 for i in range(n)]  # 1 kB each, each different
    table = pa.table({
        "received_at": pa.array([datetime(2026, 11, 1, tzinfo=timezone.utc)] * n, pa.timestamp("ms", tz="UTC")),
        "source_topic": pa.array([prefix] * n), "source_partition": pa.array([0] * n, pa.uint32()),
        "source_offset": pa.array(range(n), pa.uint64()), "item_index": pa.array([-1] * n, pa.int32()),
        "event_id": pa.array([None] * n, pa.string()), "reason": pa.array(["big"] * n),
        "raw": pa.array([r.decode() for r in raw]),
    })
    embedded_store.insert_arrow("dead_letters", table)
    count, total, first, last = embedded_store.query(
        "SELECT count(), sum(length(raw)), min(source_offset), max(source_offset) FROM dead_letters FINAL "
        "WHERE source_topic = {p:String}", {"p": prefix}).rows[0]
    assert (int(count), int(total), int(first), int(last)) == (n, 1000 * n, 0, n - 1)


def test_dead_letters_keep_reason_and_raw_bytes(embedded_store) -> None:
    raw = b"\xff\xfe not json " + uuid.uuid4().hex.encode()
    batch = process([SourceRecord("usage", 3, 99, raw)], Pricer())
    embedded_store.insert_arrow("dead_letters", dead_letter_table(batch.dead_letters))
    rows = embedded_store.query("SELECT source_partition, source_offset, item_index, reason, hex(raw) "
                                "FROM dead_letters WHERE raw LIKE {r:String}",
                                {"r": "%" + raw[-32:].decode() + "%"}).rows
    assert len(rows) == 1
    partition, offset, index, reason, stored_hex = rows[0]
    assert (partition, offset, index) == (3, 99, -1)
    assert "not valid JSON" in reason
    assert bytes.fromhex(stored_hex) == raw  # byte for byte, invalid UTF-8 included, so a replay sends what came


def test_bad_sql_raises_store_error_with_clickhouse_message(embedded_store) -> None:
    with pytest.raises(StoreError, match="Syntax error|UNKNOWN_TABLE|doesn't exist|Unknown table"):
        embedded_store.query("SELECT * FROM no_such_table_here")


def test_cluster_ddl_runs_on_every_replica_with_replicated_engines() -> None:
    from spendstream.sinks.migrations import on_cluster

    statements = [s for m in MIGRATIONS for s in m.statements if isinstance(s, str)]
    rewritten = [on_cluster(s, "prod") for s in statements]  # every migration statement can be
    assert all("ON CLUSTER 'prod'" in s for s in rewritten)
    tables = [s for s in rewritten if "CREATE TABLE" in s and "event_id_probes" not in s]
    assert tables and all("ENGINE = ReplicatedReplacingMergeTree" in s for s in tables)
    # the conflict check's scratch ids stay on the replica that a writer inserts through
    assert "ENGINE=MergeTree" in next(s for s in rewritten if "event_id_probes" in s)
    relayout = on_cluster("CREATE TABLE IF NOT EXISTS usage_events_relayout AS usage_events "
                          "ENGINE = ReplacingMergeTree(precedence) ORDER BY (ts, event_id)", "prod")
    assert "ON CLUSTER 'prod' AS usage_events ENGINE = ReplicatedReplacingMergeTree(precedence)" in relayout
    assert on_cluster("EXCHANGE TABLES a AND b", "prod") == "EXCHANGE TABLES a AND b ON CLUSTER 'prod'"
    assert on_cluster("ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS x UInt8", "prod").startswith(
        "ALTER TABLE usage_events ON CLUSTER 'prod' ADD COLUMN")
    with pytest.raises(ValueError, match="cluster name"):
        on_cluster(statements[0], "prod'; DROP")


def test_json_results_convert_per_column_exactly() -> None:
    """Decimals stay exact, 64-bit integers whole, NULL stays None, strings are untouched."""
    import json
    from decimal import Decimal

    from spendstream.sinks.store import parse_json_compact

    meta = [{"name": "usd", "type": "Nullable(Decimal(38, 18))"}, {"name": "n", "type": "UInt64"},
            {"name": "s", "type": "LowCardinality(String)"}, {"name": "i", "type": "LowCardinality(Nullable(Int64))"}]
    data = [["0.000000000000000001", "18446744073709551615", "12", None], [None, "2", "x", "-3"]]
    result = parse_json_compact(json.dumps({"meta": meta, "data": data}))
    assert result.rows == [[Decimal("1E-18"), 18446744073709551615, "12", None], [None, 2, "x", -3]]
    assert parse_json_compact(json.dumps({"meta": meta, "data": []})).rows == []


_CLOSE_MID_QUERY = """
import sys, threading, time
from spendstream.sinks.embedded import EmbeddedStore, StoreClosed

store = EmbeddedStore(sys.argv[1])
store.command("SELECT 1")
events = []
started = threading.Event()

def refresh():  # a leader's baseline refresh: long reads on a second session, on a daemon thread
    with store.second_reader() as reader:
        started.set()
        reader.query_arrow("SELECT sum(sleepEachRow(0.05)) FROM numbers(40) SETTINGS max_block_size = 1")
        events.append("read done")
        try:
            reader.query_arrow("SELECT 1")
        except StoreClosed:
            events.append("next read refused")
    events.append("reader closed")

def rollups():  # a rollup pass on the store's own session
    started.wait()
    store.query_text("SELECT sum(sleepEachRow(0.05)) FROM numbers(30) SETTINGS max_block_size = 1")
    events.append("statement done")

threads = [threading.Thread(target=refresh, daemon=True), threading.Thread(target=rollups, daemon=True)]
for thread in threads:
    thread.start()
started.wait()
time.sleep(0.5)
store.close()
print(sorted(events), flush=True)
try:
    store.command("SELECT 1")
except StoreClosed as exc:
    print("after close:", exc, flush=True)
"""


def test_closing_the_store_waits_for_statements_on_other_threads_and_refuses_new_ones(tmp_path) -> None:
    """A worker stopping while its leader's refresh reads on a second session and a rollup pass queries: closing
    chdb under them crashed the process (SIGSEGV) or hung it; now closing waits for both and the process exits 0."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _CLOSE_MID_QUERY, str(tmp_path / "data")],
                          capture_output=True, text=True, errors="replace", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == str(sorted(["read done", "next read refused", "reader closed", "statement done"]))
    assert lines[1].startswith("after close: the embedded store is closing")


_TICK_ON_CLOSING = """
import asyncio, logging, sys
from spendstream.agents.app import maintain_rollups_once
from spendstream.agents.metrics import WorkerMetrics
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.writer import SinkWriter

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
store = EmbeddedStore(sys.argv[1])
migrate(store)
metrics = WorkerMetrics(loops=[], writer=SinkWriter(store))
failures = lambda: int(metrics.rollup_failures._value.get())
store.command("DROP TABLE rollup_marks")  # a store that fails the tick: counted, retried next tick
asyncio.run(maintain_rollups_once(store, metrics, raw_retention_days=None))
print("after a store error:", failures(), flush=True)
store.close()
asyncio.run(maintain_rollups_once(store, metrics, raw_retention_days=None))
print("after closing:", failures(), flush=True)
"""


def test_a_rollup_tick_on_a_closing_store_is_no_failure_and_a_store_error_is(tmp_path) -> None:
    """A worker stopping while its leader's rollup tick starts: the store refuses the statement (StoreClosed). That
    was logged as "rollup maintenance failed (retried next tick)" and counted in
    spendstream_rollup_maintenance_failures; it is neither (no next tick, nothing failed)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _TICK_ON_CLOSING, str(tmp_path / "data")],
                          capture_output=True, text=True, errors="replace", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "after a store error: 1" in lines and "after closing: 1" in lines, done.stdout[-3000:]
    assert sum("rollup maintenance failed" in line for line in lines) == 1, done.stdout[-3000:]
    assert "INFO rollup maintenance stopped: the store is closing" in lines, done.stdout[-3000:]
