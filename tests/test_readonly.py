"""The read-only query path: ClickHouse's parser decides what is a write."""

from __future__ import annotations

import pytest

from spendstream.sinks.readonly import WriteRefused, check_read_only

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sql", [
    "SELECT 1", "WITH 1 AS a SELECT a", "SELECT 1 UNION ALL SELECT 2", "SHOW TABLES", "DESCRIBE TABLE usage_events",
    "EXPLAIN SELECT 1", "EXISTS TABLE usage_events", "SELECT 'INSERT INTO t' AS looks_like_a_write",
    "SELECT {team:String} AS bound",
])
def test_reads_pass(embedded_store, sql: str) -> None:
    check_read_only(embedded_store, sql, {"team": "x'; DROP TABLE usage_events; --"})


@pytest.mark.parametrize(("sql", "kind"), [
    ("INSERT INTO alerts (kind) VALUES ('x')", "InsertQuery"), ("DROP TABLE usage_events", "DropQuery"),
    ("ALTER TABLE usage_events DELETE WHERE 1", "AlterQuery"), ("TRUNCATE TABLE alerts", "TruncateQuery"),
    ("CREATE TABLE x (a Int8) ENGINE = Memory", "CreateQuery"), ("OPTIMIZE TABLE usage_events", "OptimizeQuery"),
    ("SELECT 1 INTO OUTFILE '/tmp/spendstream-should-not-exist'", "INTO OUTFILE"), ("SET readonly = 0", "Set"),
    ("SYSTEM FLUSH LOGS", "SYSTEM"),
])
def test_writes_are_refused_and_named(embedded_store, sql: str, kind: str) -> None:
    with pytest.raises(WriteRefused, match="read-only") as refused:
        check_read_only(embedded_store, sql)
    assert kind in str(refused.value)
