"""A pass's watermarks in one statement (``rollups.watermarks``, and ``watermarks_select``'s one row) equal each
rollup's own ``watermark_sql``, and a read given them answers what raw ``usage_events FINAL`` answers, to the last
digit.

Compared with nothing maintained (every marked period pending), after the maintainer's pass, after a
late event reopens a closed hour, for a rollup never maintained (no ``rollup_state`` row), and with the
current minute still being written (its marks newer than any computation). A round of the alerting cycle
computes them once for budgets and retry storms (:mod:`spendstream.detect.pass_marks`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.app import store_usage
from spendstream.agents.stages import process
from spendstream.alerting.cycle import AlertCycle, AlertingConfig
from spendstream.batches import SourceRecord
from spendstream.detect import pass_marks as one_pass
from spendstream.detect.budgets import Budget, layers_of, spend_in
from spendstream.detect.retry_storm import customer_windows, feature_windows, pass_marks, slow_loops
from spendstream.detect.windows import Window
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.store import query_result, sql_time
from spendstream.sinks.writer import SinkWriter

PRICER = Pricer()
NEVER_MAINTAINED = dataclasses.replace(rollups.MINUTES, name=f"never_{uuid.uuid4().hex[:6]}")


def _write(store, events: list[dict], partition: int = 0) -> None:
    asyncio.run(store_usage(SinkWriter(store), process(
        [SourceRecord("usage", partition, 0, orjson.dumps(events))], PRICER)))


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def _assert_marks_agree(store) -> None:
    grains = (*rollups.all_grains(), NEVER_MAINTAINED)
    for _ in range(3):  # (a watermark is at most the current period: a minute may turn between the two reads)
        one_by_one = query_result(store, "SELECT " + ", ".join(
            f"toString({rollups.watermark_sql(r)})" for r in grains)).rows[0]
        together = rollups.watermarks(store, grains)
        names = [f"w{i}" for i in range(len(grains))]  # and as one row (key_lists_watermarks' SQL)
        row = query_result(store, f"SELECT {', '.join(f'toString({n})' for n in names)} FROM "
                                  f"({rollups.watermarks_select(grains, names)})").rows[0]
        if [together[r.name] for r in grains] == [rollups._as_datetime(v) for v in one_by_one] and \
                row == one_by_one:
            return
    raise AssertionError(f"watermarks differ: {together} vs {one_by_one}")


def _assert_reads_equal_raw(store, run: str, now: datetime) -> None:
    marks = pass_marks(store)
    slow, customers = timedelta(hours=2), [f"{run}-c0", f"{run}-c1"]
    assert feature_windows(store, start=now - slow, end=now, marks=marks) == \
        feature_windows(store, start=now - slow, end=now)
    raw = dict(query_result(store, """
        SELECT concat('customer=', customer), toFloat64(count()) FROM usage_events FINAL
        WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')} AND customer IN {c:Array(String)}
        GROUP BY customer""", {"a": sql_time(now - slow), "b": sql_time(now),
                               "c": "[" + ",".join(f"'{c}'" for c in customers) + "]"}).rows)
    got = customer_windows(store, start=now - slow, end=now, customers=customers, marks=marks)
    assert {s: a for (s, _), (a, _, _) in got.items()} == raw and raw
    assert got == customer_windows(store, start=now - slow, end=now, customers=customers)
    assert slow_loops(store, now=now, slow=slow, marks=marks) == slow_loops(store, now=now, slow=slow)
    budget = Budget(name="b", customer=f"{run}-c0", amount_usd=1)
    spent = query_result(store, """
        SELECT sumIf(total_cost, priced) FROM usage_events FINAL
        WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')} AND customer = {c:String}""",
                         {"a": sql_time(now - timedelta(hours=30)), "b": sql_time(now), "c": f"{run}-c0"}).scalar()
    assert spend_in(store, [(budget, Window(now - timedelta(hours=30), now))]) == [spent] and spent > 0
    shared = one_pass.pass_marks(store, [budget])  # what a round of the cycle hands budgets and storms
    assert spend_in(store, [(budget, Window(now - timedelta(hours=30), now))], marks=shared) == [spent]
    assert customer_windows(store, start=now - slow, end=now, customers=customers, marks=shared) == got


@pytest.mark.integration
def test_a_pass_s_watermarks_in_one_statement_equal_each_rollup_s_own(embedded_store) -> None:
    store, run = embedded_store, f"pw-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    events = [{"event_id": f"{run}-{k}", "request_id": f"{run}-r{k}",
               "ts": (now - timedelta(hours=30) + timedelta(seconds=97 * k)).isoformat(timespec="milliseconds"),
               "provider": "openai", "model": "gpt-4o-mini", "feature": f"{run}-f", "customer": f"{run}-c{k % 3}",
               "input_tokens": 1_000 + k, "output_tokens": 10, **({"status": "error"} if k % 5 == 0 else {})}
              for k in range(30 * 3600 // 97)]  # through the current minute
    _write(store, events)
    _assert_marks_agree(store)  # nothing maintained yet
    _assert_reads_equal_raw(store, run, now)
    _maintain(store)
    _assert_marks_agree(store)
    _assert_reads_equal_raw(store, run, now)
    _write(store, events[:100], partition=1)                                         # re-deliveries
    _write(store, [{**events[-1], "input_tokens": 9_000_000}], partition=2)           # a conflicting copy
    late = {**events[5], "event_id": f"{run}-late", "request_id": f"{run}-late",
            "ts": (now - timedelta(hours=1, minutes=40)).isoformat()}
    _write(store, [late])                                                            # reopens a closed hour
    _write(store, [{**events[-1], "event_id": f"{run}-open", "ts": now.isoformat()}])  # the open minute, again
    _assert_marks_agree(store)
    assert rollups.watermarks(store, [rollups.CUSTOMER_HOURS])["customer_hours"] <= now - timedelta(hours=1)
    _assert_reads_equal_raw(store, run, now)
    _maintain(store)
    _assert_marks_agree(store)
    _assert_reads_equal_raw(store, run, now)


@pytest.mark.integration
def test_a_round_computes_the_watermarks_of_budgets_and_storms_once(embedded_store, monkeypatch) -> None:
    asked: list[list[str]] = []
    watermarks = rollups.watermarks

    def counted(querier, grains):
        asked.append(sorted(r.name for r in grains))
        return watermarks(querier, grains)

    monkeypatch.setattr(rollups, "watermarks", counted)
    budgets = (Budget(name="c", customer="pw-nobody", amount_usd=1), Budget(name="t", team="pw-none", amount_usd=1),
               Budget(name="all", amount_usd=1_000_000_000))
    report = AlertCycle(embedded_store, AlertingConfig(budgets=budgets), pass_deadline_s=10).run()
    assert report.detector_errors == {}
    storms = {"feature_failures", "loop_shapes", "customer_hours"}
    assert asked == [sorted(storms | {r.name for r in layers_of(budgets)})]
    assert {"customer_days", "team_days", "usage_hours"} <= set(asked[0])


@pytest.mark.integration
def test_a_round_finds_the_hour_of_its_baselines_once_for_storms_and_spend(embedded_store, monkeypatch) -> None:
    from spendstream.alerting import cycle
    from spendstream.detect import baseline

    at = datetime(2021, 1, 20, 12, 7, tzinfo=timezone.utc)  # (this test's month: 2021-01)
    probed: list[datetime] = []
    newest = baseline.newest_hour

    def counted(querier, now):
        probed.append(now)
        return newest(querier, now)

    monkeypatch.setattr(baseline, "newest_hour", counted)
    monkeypatch.setattr(cycle, "newest_hour", counted, raising=False)  # (main's cycle did not name it)
    report = AlertCycle(embedded_store, AlertingConfig(), pass_deadline_s=10, clock=lambda: at).run()
    assert report.detector_errors == {}
    assert probed == [at]
    assert newest(embedded_store, at) == at.replace(minute=0)  # the round's refresh learned this hour first
