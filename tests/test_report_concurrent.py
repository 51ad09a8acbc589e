"""The report reads beside its drawing: the charts are drawn on a thread while the advisor's and the invoices'
queries run on a second chdb session. The page must be the one the same reads give one after another, on a
store with duplicates, conflicting re-sends and late events, and a failure on either side must surface."""

from __future__ import annotations

import re
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.report import _table, build_report, report_tables
from spendstream.sinks.store import SecondReader, StoreError, sql_time
from tests.test_readers_on_rollups import REQUESTS_PER_DAY, _bursts, _maintain, _write

pytestmark = pytest.mark.integration


class _OneAtATime:
    """The store's reads and nothing else: no second reader, so the report reads in turn, on this thread."""

    def __init__(self, store) -> None:
        self._store = store

    def query_text(self, *args, **kwargs) -> str:
        return self._store.query_text(*args, **kwargs)


class _FailingBeside(_OneAtATime):
    """A second reader whose every query fails."""

    @contextmanager
    def second_reader(self):
        yield self

    def query_text(self, sql, *args, **kwargs) -> str:
        if threading.current_thread() is threading.main_thread():
            return super().query_text(sql, *args, **kwargs)
        raise StoreError("refused beside")


def _comparable(page: str) -> str:
    # the minute it was generated; the GPU figure's float averages may differ in their last digit between
    # runs of one query (ClickHouse adds a float sum in the order its threads finish)
    page = re.sub(r"generated [^<]* by spendstream", "", page)
    return re.sub(r"<figure><figcaption>Self-hosted GPUs.*?</figure>", "", page, flags=re.S)


def test_the_page_is_the_same_read_beside_the_drawing_or_in_turn(embedded_store) -> None:
    store = embedded_store
    assert isinstance(store, SecondReader) and not isinstance(_OneAtATime(store), SecondReader)
    run = f"rc-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    starts, events = _bursts(run, now)
    _write(store, events)
    _maintain(store)
    # re-deliveries; a conflicting copy (not applied); late retries of rolled-up requests (pending in the rollups)
    _write(store, events[:60], partition=1)
    _write(store, [{**events[7], "output_tokens": 77_777}], partition=2)
    _write(store, [{**events[200 + k], "event_id": f"{run}-late-{k}", "attempt": 4,
                    "ts": (datetime.fromisoformat(events[200 + k]["ts"]) + timedelta(seconds=1)).isoformat()}
                   for k in range(5)])
    since, until = starts[3] + timedelta(minutes=2, seconds=13), now
    beside = build_report(store, since, until)
    in_turn = build_report(_OneAtATime(store), since, until)
    assert _comparable(beside) == _comparable(in_turn)
    # every section's table is report_tables' (tests/test_readers_on_rollups.py compares those with raw FINAL),
    # and the requests are raw's distinct requests per UTC day × team × feature, duplicates and late retries
    # included, with the page saying how they are counted
    tables = report_tables(store, since, until)
    assert [name for name in ("spend", "features", "customers", "models", "unit", "waste", "alerts")
            if _table(tables[name]) not in beside] == []
    raw = store.query(REQUESTS_PER_DAY, {"since": sql_time(since), "until": sql_time(until)})
    assert f"Requests<b>{raw.scalar():,}</b>" in beside
    assert "Requests are counted per UTC day" in beside


def test_a_failed_read_beside_the_tables_fails_the_report(seeded_store) -> None:
    now = datetime.now(timezone.utc)
    with pytest.raises(StoreError, match="refused beside"):
        build_report(_FailingBeside(seeded_store), now - timedelta(days=1), now)


def test_a_second_reader_reads_the_store_at_the_same_time_and_stops_after_a_failure(embedded_store) -> None:
    count = "SELECT count() FROM schema_migrations"
    seen = []
    with embedded_store.second_reader() as reader:
        slow = threading.Thread(target=lambda: seen.append(reader.query_text("SELECT sleep(3)", fmt="CSV")))
        slow.start()
        assert embedded_store.query(count).scalar() > 0
        assert slow.is_alive()  # the store's own query did not wait for the reader's
        slow.join()
        assert seen == ["0\n"]
        assert reader.query_text(count, fmt="CSV") == embedded_store.query_text(count, fmt="CSV")
        with pytest.raises(StoreError):
            reader.query_text("SELECT no_such_column FROM schema_migrations")
        with pytest.raises(StoreError, match="failed a query before"):
            reader.query_text("SELECT 1")
    assert embedded_store.query("SELECT 1").scalar() == 1  # the store's own session is untouched
