"""The report's top customers and the advisor's sums read less, and answer as raw FINAL does, to the last digit.

The top customers' partial days come from ``customer_provider_hours`` (hour × customer × provider) rather than
``customer_hours`` (hour × six keys); the advisor's batch, right-size and output-cap rows are summed once per
feature × provider × model and the coarser sets from those sums. Both are compared with the same questions asked of
``usage_events FINAL`` over ranges that start and end inside minutes, hours and days, before maintaining, after,
with re-deliveries, a conflicting re-send and late events pending, and after maintaining again. Data in October
2020 and August 2021, months no other test writes (the session's 2019 months cannot hold usage: an event before
2020 is dead-lettered as a broken clock).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.advisor import advice_sums, advise
from spendstream.report import customer_costs, report_step, report_tables
from spendstream.sinks.shapes import ADVICE_HOURS
from spendstream.sinks.store import query_result, sql_time
from tests.test_readers_on_rollups import WINDOW, _bursts, _maintain, _ranges, _report_raw, _rows, _write

pytestmark = pytest.mark.integration

_MEASURES = {m.name: m.of_raw for m in ADVICE_HOURS.measures}


def _advice_raw(keys: str) -> str:
    """``advice_hours``' measures over raw, grouped by ``keys`` (the rollup's rows: priced, with a feature)."""
    measures = ", ".join(f"{of_raw} AS {name}" for name, of_raw in _MEASURES.items())
    return (f"SELECT {keys}, {measures} FROM usage_events FINAL WHERE {WINDOW} AND {ADVICE_HOURS.where} "
            f"GROUP BY {keys}")


def _advice_differences(store, p: dict, whole: bool) -> list[str]:
    """advice_sums' three lists against the same sums over raw, each as sorted row strings (``whole``: a range
    that must hold rows of each)."""
    batch, right_size, output_cap = advice_sums(store, p)
    raw_batch = [r for r in query_result(store, _advice_raw("feature, price_provider_id"), p).dicts()
                 if r["realtime_calls"] > 0]
    raw_size = [r for r in query_result(store, _advice_raw("feature, price_provider_id, price_model_id"), p).dicts()
                if r["ok_calls"] > 0]
    raw_cap = query_result(store, _advice_raw("feature"), p).dicts()
    pairs = {
        "batch": ([(r["feature"], r["provider"], r["cost_usd"], r["realtime"], r["declared"], r["not_user_facing"])
                   for r in batch],
                  [(r["feature"], r["price_provider_id"], r["realtime_cost_usd"], r["realtime_calls"],
                    r["realtime_declared"] == r["realtime_calls"], r["realtime_user_facing"] == 0) for r in raw_batch]),
        "right size": ([(r["feature"], r["provider"], r["model"], r["ok"], r["cost_usd"], r["input_hist"],
                         r["output_hist"], r["uncached"], r["cached"], r["writes"], r["output"]) for r in right_size],
                       [(r["feature"], r["price_provider_id"], r["price_model_id"], r["ok_calls"], r["ok_cost_usd"],
                         r["ok_input_hist"], r["ok_output_hist"], r["ok_uncached_tokens"], r["ok_cached_tokens"],
                         r["ok_cache_write_tokens"], r["ok_output_tokens"]) for r in raw_size]),
        "output cap": ([(r["feature"], r["all_calls"], r["output_hist"], r["uncapped_share"]) for r in output_cap],
                       [(r["feature"], r["calls"], r["output_hist"], r["uncapped_calls"] / r["calls"])
                        for r in raw_cap]),
    }
    found = []
    for name, (rolled, raw) in pairs.items():
        rolled_s, raw_s = sorted(map(str, rolled)), sorted(map(str, raw))
        if rolled_s != raw_s:
            first = next((a, b) for a, b in zip([*rolled_s, ""], [*raw_s, ""], strict=False) if a != b)
            found.append(f"advice {name}: {len(rolled_s)} rows from the rollup, {len(raw_s)} from raw; {first}")
        if whole and not raw_s:
            found.append(f"advice {name}: no rows to compare")
    return found


def _customer_differences(store, spans: dict) -> list[str]:
    found = []
    for span, (since, until) in spans.items():
        p = {"since": sql_time(since), "until": sql_time(until)}
        rolled = _rows(report_tables(store, since, until)["customers"])
        raw = _rows(store.query(_report_raw(report_step(since, until))["customers"], p))
        if rolled != raw:
            found.append(f"customers ({span}): {rolled} against {raw}")
        found += [f"{d} ({span})" for d in _advice_differences(store, p, whole=span == "the last week")]
    return found


def _through_duplicates_conflicts_and_late_events(store, now: datetime) -> None:
    """The comparisons before maintaining, after, with re-deliveries, a conflicting re-send and late events
    pending, and after maintaining again (as tests/test_readers_on_rollups.py's main test does)."""
    run = f"rd-{uuid.uuid4().hex[:6]}"
    starts, events = _bursts(run, now)
    _write(store, events)
    spans = _ranges(starts, now)
    assert _customer_differences(store, spans) == [], "before maintaining"
    _maintain(store)
    assert _customer_differences(store, spans) == [], "maintained"
    _write(store, events[:60], partition=1)
    _write(store, [{**events[7], "output_tokens": 77_777, "customer": f"{run}-c-conflict"}], partition=2)
    late = [{**events[200 + k], "event_id": f"{run}-late-{k}", "attempt": 4,
             "ts": (datetime.fromisoformat(events[200 + k]["ts"]) + timedelta(seconds=1)).isoformat()}
            for k in range(5)]
    _write(store, late)
    assert _customer_differences(store, spans) == [], "late events pending"
    _maintain(store)
    assert _customer_differences(store, spans) == [], "maintained again"


def test_top_customers_and_advice_sums_equal_raw_in_october_2020(embedded_store) -> None:
    now = datetime(2020, 10, 27, 13, 17, 3, tzinfo=timezone.utc)
    _through_duplicates_conflicts_and_late_events(embedded_store, now)


def test_top_customers_and_advice_sums_equal_raw_in_august_2021(embedded_store) -> None:
    # the range's whole days and its partial days at both ends, another hour of the day
    _through_duplicates_conflicts_and_late_events(embedded_store, datetime(2021, 8, 25, 4, 41, 9, tzinfo=timezone.utc))


def test_top_customers_read_hours_per_customer_and_provider() -> None:
    """The partial days are read from ``customer_provider_hours`` (about half the rows of ``customer_hours`` at 50M
    events, BENCHMARKS.md s20), for a range with whole days and for one without."""
    at = datetime(2020, 10, 1, 6, 38, tzinfo=timezone.utc)
    for since, until in ((at, at + timedelta(days=7)), (at, at + timedelta(hours=3))):
        sql = customer_costs(_NoDays(), since, until, {})
        assert "customer_provider_hours" in sql and "customer_hours" not in sql


class _NoDays:
    """A querier whose day rollups have caught up with nothing (every watermark 1970): the SQL only."""

    def query_text(self, sql: str, params=None, fmt: str = "PrettyCompact") -> str:
        return ('{"meta": [{"name": "w", "type": "String"}], "data": [["1970-01-01 00:00:00.000"]], "rows": 1}')


class _Recording:
    """A querier that keeps the text of every statement it passes on."""

    def __init__(self, store) -> None:
        self.store, self.statements = store, []

    def query_text(self, sql: str, params=None, fmt: str = "PrettyCompact") -> str:
        self.statements.append(sql)
        return self.store.query_text(sql, params, fmt)


@pytest.mark.parametrize("days", [7, 2, 0.1])
def test_the_report_and_its_advisor_read_the_watermarks_once_each(embedded_store, days) -> None:
    """The report's tables read every rollup's watermark in one statement, and so does the advisor, instead of
    one per read (seven in the report's tables, six in the advisor's at 50M events: ~16 ms CPU each)."""
    until = datetime(2020, 10, 30, 13, 17, 3, tzinfo=timezone.utc)
    since = until - timedelta(days=days)
    for read in (lambda q: report_tables(q, since, until), lambda q: advise(q, since, until)):
        recording = _Recording(embedded_store)
        read(recording)
        assert sum("rollup_marks" in sql for sql in recording.statements) == 1, recording.statements
