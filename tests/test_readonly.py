"""Statements from outside: one at a time, read-only as ClickHouse enforces it, a clean session after a failure."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks.readonly import StatementRefused, WriteRefused
from spendstream.sinks.rows import usage_table
from spendstream.sinks.store import StoreError

pytestmark = pytest.mark.integration


@pytest.fixture
def billed(embedded_store) -> tuple[str, Decimal]:
    """Three priced events of their own: (event_id prefix, their total cost)."""
    prefix = uuid.uuid4().hex
    events = [{"event_id": f"{prefix}-{i}", "ts": "2026-11-01T12:00:00Z", "provider": "openai", "model": "gpt-4o",
               "input_tokens": 1_000_000, "output_tokens": 0} for i in range(3)]
    embedded_store.insert_arrow("usage_events", usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(events))],
                                                                    Pricer())))
    return prefix, _billed_total(embedded_store, prefix)


def _billed_total(store, prefix: str) -> Decimal:
    return store.query("SELECT sum(total_cost) FROM usage_events FINAL WHERE startsWith(event_id, {p:String})",
                       {"p": prefix}).scalar()


@pytest.mark.parametrize("sql", [
    "SELECT 1", "SELECT 1;", "WITH 1 AS a SELECT a", "SELECT 1 UNION ALL SELECT 2", "SHOW TABLES",
    "DESCRIBE TABLE usage_events", "EXPLAIN SELECT 1", "EXISTS TABLE usage_events",
    "SELECT 'INSERT INTO t; DROP TABLE usage_events' AS looks_like_a_write", "SELECT 1 AS `a;b` -- ; DROP TABLE x",
    "SELECT {team:String} AS bound", "SELECT count() FROM usage_events FINAL FORMAT CSV",
])
def test_reads_run(embedded_store, sql: str) -> None:
    embedded_store.run_statement(sql, {"team": "x'; DROP TABLE usage_events; --"})


@pytest.mark.parametrize("sql", [
    "INSERT INTO alerts (kind) VALUES ('x')", "DROP TABLE cost_corrections", "TRUNCATE TABLE alerts",
    "ALTER TABLE usage_events UPDATE total_cost = 0 WHERE 1",
    "CREATE TABLE scratch (a Int8) ENGINE = Memory", "OPTIMIZE TABLE usage_events FINAL",
    "SELECT 1 SETTINGS readonly = 0", "SELECT count() FROM numbers(10) SETTINGS max_threads = 1",
])
def test_clickhouse_refuses_changes_on_the_read_only_path(embedded_store, billed, sql: str) -> None:
    prefix, total = billed
    tables = embedded_store.query_text("SHOW TABLES", fmt="CSV")
    with pytest.raises(WriteRefused, match=r"read-only: ClickHouse refused .*READONLY.*pass --write"):
        embedded_store.run_statement(sql)
    assert _billed_total(embedded_store, prefix) == total > 0
    assert embedded_store.query_text("SHOW TABLES", fmt="CSV") == tables


@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize("sql", [
    "SELECT 1; ALTER TABLE usage_events UPDATE total_cost = 0 WHERE startsWith(event_id, {p:String}) "
    "SETTINGS mutations_sync = 1",
    "SELECT 1;ALTER TABLE usage_events DELETE WHERE startsWith(event_id, {p:String}) SETTINGS mutations_sync = 1",
    "SELECT ';'\n;\nALTER TABLE usage_events UPDATE total_cost = 0 WHERE startsWith(event_id, {p:String}) "
    "SETTINGS mutations_sync = 1 -- ;",
])
def test_several_statements_are_refused_before_any_runs(embedded_store, billed, sql: str, write: bool) -> None:
    prefix, total = billed
    with pytest.raises(StatementRefused, match="one statement at a time.*found 2.*nothing was run"):
        embedded_store.run_statement(sql, {"p": prefix}, write=write)
    assert _billed_total(embedded_store, prefix) == total > 0
    assert embedded_store.run_statement("SELECT 42", fmt="CSV") == b"42\n"


def test_one_statement_with_write_does_change_data(embedded_store, billed) -> None:
    # the control for the refusals above: the same change, alone and allowed, is made
    prefix, _ = billed
    embedded_store.run_statement("ALTER TABLE usage_events UPDATE total_cost = 0 "
                                 "WHERE startsWith(event_id, {p:String}) SETTINGS mutations_sync = 1",
                                 {"p": prefix}, write=True)
    assert _billed_total(embedded_store, prefix) == 0


def test_control_statements_are_refused_on_the_read_only_path(embedded_store, tmp_path) -> None:
    # INTO OUTFILE is written by chdb's client side, which readonly does not govern
    outfile = tmp_path / "written-by-chdb.csv"
    for sql in (f"SELECT 1 INTO OUTFILE '{outfile}'", f"SHOW TABLES INTO OUTFILE '{outfile}'", "SET max_threads = 1",
                "SYSTEM FLUSH LOGS", "ALTER TABLE usage_events DELETE WHERE 1 SETTINGS mutations_sync = 1"):
        with pytest.raises(WriteRefused, match="read-only: INTO OUTFILE .* pass --write"):
            embedded_store.run_statement(sql)
    assert not outfile.exists()


def test_a_statement_from_outside_cannot_change_the_pipelines_session(embedded_store) -> None:
    embedded_store.run_statement("USE system", write=True)  # runs in a session of its own
    embedded_store.run_statement("SET max_threads = 1", write=True)
    assert embedded_store.query_text("SELECT getSetting('max_threads') = 1", fmt="CSV") == "0\n"
    assert embedded_store.query_text("SELECT currentDatabase()", fmt="CSV") == '"default"\n'
    assert embedded_store.run_statement("SELECT currentDatabase()", fmt="CSV", write=True) == b'"default"\n'


# Each outward table function with arguments that would reach the loopback HTTP server,
# or a file, if ClickHouse let it run. {port} is that server's.
_REFUSED_BY_READONLY = {
    "file": "file('/etc/passwd', 'LineAsString')",
    "file path as a table": "'/etc/passwd'",
    "url": "url('http://127.0.0.1:{port}/', 'LineAsString')",
    "s3": "s3('http://127.0.0.1:{port}/spendstream-bucket/key.csv', 'CSV', 'a String')",
    "gcs": "gcs('http://127.0.0.1:{port}/spendstream-bucket/key.csv', 'CSV', 'a String')",
    "azureBlobStorage": "azureBlobStorage('http://127.0.0.1:{port}/acct', 'container', 'key.csv', 'acct', 'key', "
                        "'CSV', 'auto', 'a String')",
    "remote": "remote('127.0.0.1:{port}', system.one)",
    "remoteSecure": "remoteSecure('127.0.0.1:{port}', system.one)",
    "mysql": "mysql('127.0.0.1:{port}', 'db', 'tbl', 'user', 'password')",
    "postgresql": "postgresql('127.0.0.1:{port}', 'db', 'tbl', 'user', 'password')",
    "mongodb": "mongodb('127.0.0.1:{port}', 'db', 'coll', 'user', 'password', 'a String')",
    "redis": "redis('127.0.0.1:{port}', 'k', 'k String, v String')",
    "hdfs": "hdfs('hdfs://127.0.0.1:{port}/key.csv', 'CSV', 'a String')",
    "jdbc": "jdbc('jdbc:mysql://127.0.0.1:{port}/db', 'tbl')",
    "odbc": "odbc('DSN=spendstream', 'tbl')",
    "sqlite": "sqlite('/etc/passwd', 'tbl')",
    "executable": "executable('cat', 'TSV', 'a String', (SELECT 'x'))",
    "iceberg": "iceberg('http://127.0.0.1:{port}/spendstream-bucket/table/')",
    "deltaLake": "deltaLake('http://127.0.0.1:{port}/spendstream-bucket/table/')",
    "hudi": "hudi('http://127.0.0.1:{port}/spendstream-bucket/table/')",
    "filesystem": "filesystem('/etc')",
    "dictionary": "dictionary('spendstream')",
    "python (chdb: objects of this process)": "Python(params)",
}
# Refused in chdb for other reasons: it has no clusters, and input() only feeds an INSERT.
# On a server, s3Cluster/urlCluster/fileCluster are refused by readonly; cluster() and
# clusterAllReplicas() reach only the server's own configured clusters, read-only.
_REFUSED_OTHERWISE = {
    "s3Cluster": "s3Cluster('default', 'http://127.0.0.1:{port}/spendstream-bucket/key.csv', 'CSV', 'a String')",
    "urlCluster": "urlCluster('default', 'http://127.0.0.1:{port}/', 'LineAsString')",
    "fileCluster": "fileCluster('default', '/etc/passwd', 'LineAsString')",
    "cluster": "cluster('default', system.one)",
    "clusterAllReplicas": "clusterAllReplicas('default', system.one)",
    "input": "input('a String')",
}


@pytest.mark.parametrize("name", list(_REFUSED_BY_READONLY))
def test_clickhouse_refuses_table_functions_that_reach_outside(embedded_store, http_server, name: str) -> None:
    port, hits = http_server
    sql = "SELECT * FROM " + _REFUSED_BY_READONLY[name].format(port=port)
    # file() is refused by name before ClickHouse sees it (see the scalar file() below)
    with pytest.raises(WriteRefused, match=r"READONLY" if name != "file" else r"file\(\) reads files"):
        embedded_store.run_statement(sql, {"x": "y"})
    assert hits == []


@pytest.mark.parametrize("name", list(_REFUSED_OTHERWISE))
def test_cluster_and_input_table_functions_do_not_run(embedded_store, http_server, name: str) -> None:
    port, hits = http_server
    with pytest.raises(StoreError):
        embedded_store.run_statement("SELECT * FROM " + _REFUSED_OTHERWISE[name].format(port=port))
    assert hits == []


@pytest.mark.parametrize("sql", [
    "SELECT file('/etc/passwd')", "SELECT length(file({path:String}))",
    "SELECT arrayMap(p -> `file`(p), ['/etc/passwd'])", "EXPLAIN QUERY TREE SELECT file('/etc/passwd')",
    "SELECT * FROM (SELECT file('/etc/passwd') AS f)",
])
def test_the_file_function_is_refused_by_name(embedded_store, sql: str) -> None:
    # chdb runs as clickhouse-local, where file(path) reads any file even under readonly
    with pytest.raises(WriteRefused, match=r"file\(\) reads files on this machine"):
        embedded_store.run_statement(sql, {"path": "/etc/passwd"})


def test_only_reviewed_table_functions_are_open_to_read_only_users(embedded_store) -> None:
    # The read-only path rests on ClickHouse's own list of table functions a readonly user
    # may call. A chdb upgrade that adds one must be looked at: does it reach outside?
    allowed = set(embedded_store.query_text(
        "SELECT name FROM system.table_functions WHERE allow_readonly", fmt="TSV").split())
    assert allowed <= {
        "SQLStandardValues", "values", "null", "numbers", "numbers_mt", "primes", "generateSeries",
        "generate_series", "generateRandom", "fuzzJSON", "fuzzQuery", "view", "viewIfPermitted", "merge",
        "mergeTreeIndex", "mergeTreeProjection", "mergeTreeTextIndex", "mergeTreeAnalyzeIndexes",
        "mergeTreeAnalyzeIndexesUUID", "mergeTreeCodecBlockCounts",
        "input",  # feeds INSERT … SELECT only; INSERT is refused
        "cluster", "clusterAllReplicas",  # the server's own configured clusters
        "eval",  # experimental, and readonly cannot turn its setting on
    }


@pytest.mark.parametrize("write", [False, True])
def test_a_failed_statement_leaves_its_session_clean(embedded_store, write: bool) -> None:
    # The failure comes after some blocks were already written out; chdb used to hand
    # that partial output to the session's next query.
    with pytest.raises(StoreError, match="throwIf"):
        embedded_store.run_statement("SELECT throwIf(number = 300000) FROM numbers(1000000)", fmt="CSV", write=write)
    assert embedded_store.run_statement("SELECT 42", fmt="CSV", write=write) == b"42\n"


def test_a_failed_pipeline_query_leaves_the_session_clean(embedded_store) -> None:
    with pytest.raises(StoreError, match="throwIf"):
        embedded_store.query_text("SELECT throwIf(number = 300000) FROM numbers(1000000)", fmt="CSV")
    assert embedded_store.query_text("SELECT 42", fmt="CSV") == "42\n"


def test_syntax_errors_say_where(embedded_store) -> None:
    with pytest.raises(StoreError, match="Syntax error: failed at position 7"):
        embedded_store.run_statement("SELEC 1")
    with pytest.raises(StoreError, match="Empty query"):
        embedded_store.run_statement("  ")
