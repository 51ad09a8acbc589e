"""GPU cost allocated per hour × deployment × team, kept by the maintainer (``gpu_allocated_hours``, migration 33),
read through ``gpu_allocated_hourly(since, until)``: equal to the allocation of raw events, to the digit.

The reference is migration 4's allocation (usage read from ``usage_events FINAL``), and today's
``gpu_cost_allocated(since, until)``, both summed per deployment × team and per hour × deployment × team, on ranges of
whole hours, partial hours at both ends, a range inside one hour and a day's ``Date`` bounds. Asked before the
maintainer ran (every hour pending: live), after it, and after each thing that changes a closed hour's split: late
usage, a late GPU sample, a re-priced deployment; with duplicate events and a conflicting re-send. Real chdb (the
session's shared store); months 2023-12 and 2024-08 are this file's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.pricing.deployments import Deployment, GpuPrice
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks import migrations, rollups
from spendstream.sinks.gpu_prices import price_table, reprice_gpu, sync_prices
from spendstream.sinks.rows import deployment_table, gpu_sample_table, usage_table
from spendstream.sinks.store import sql_time

pytestmark = pytest.mark.integration

T0 = datetime(2024, 8, 3, 10, 0, tzinfo=timezone.utc)
RAW_ALLOCATED = migrations._GPU_ALLOCATED.split(" AS\n", 1)[1]
RANGES = ((T0, T0 + timedelta(hours=3)),                                                   # whole hours
          (T0 + timedelta(minutes=17, seconds=30), T0 + timedelta(hours=2, minutes=41)),   # partial at both ends
          (T0 + timedelta(hours=1, minutes=4), T0 + timedelta(hours=1, minutes=6)),        # inside one hour
          (T0 + timedelta(minutes=59), T0 + timedelta(hours=2, milliseconds=1)),           # a minute, 2 h, a ms
          (datetime(2024, 8, 3, tzinfo=timezone.utc), datetime(2024, 8, 4, tzinfo=timezone.utc)))  # a day
RANGED = "since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')}"
IN_RANGE = "minute >= {since:DateTime64(3, 'UTC')} AND minute < {until:DateTime64(3, 'UTC')}"


def _deployment(store, usd: str = "2.47") -> Deployment:
    name = f"hours-{uuid.uuid4().hex[:8]}"
    d = Deployment(name=name, gpu_type="H100", gpu_count=3, usd_per_gpu_hour=Decimal(usd))
    store.insert_arrow("gpu_deployments", deployment_table([d]))
    sync_prices(store, {name: d})
    return d


def _samples(store, name: str, minutes: Iterable[int], seconds: tuple[int, ...] = (7, 27, 47)) -> None:
    store.insert_arrow("gpu_samples", gpu_sample_table([
        GpuSample(ts=T0 + timedelta(minutes=m, seconds=s), interval_s=20, deployment=name,
                  prompt_tokens_delta=7_001 + m, generation_tokens_delta=333 + 7 * m, gpu_utilization=0.37)
        for m in minutes for s in seconds]))


def _events(name: str, minute: int, count: int, tag: str = "", extra_tokens: int = 0) -> list[dict]:
    """``count`` events in ``minute`` naming the deployment (one in five names none), over three teams, features
    and customers."""
    return [{"event_id": f"{name}-{minute}-{tag}{i}",
             "ts": (T0 + timedelta(minutes=minute, seconds=3 + (5 * i) % 55, milliseconds=17)).isoformat(),
             "provider": "self-hosted", "model": "llama-3-70b", "deployment": name if i % 5 else None,
             "team": None if i % 7 == 6 else f"t{i % 3}", "feature": f"f{i % 2}",
             "customer": None if i % 4 == 3 else f"c{i % 7}",
             "input_tokens": 1_000 + 37 * i + minute + extra_tokens, "output_tokens": 7 * i + 1} for i in range(count)]


def _store_events(store, events: list[dict]) -> None:
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


def _rows(store, sql: str, params: dict) -> list[tuple[str, ...]]:
    return [tuple(str(v) for v in row) for row in store.query(sql, params).rows]


def _differences(store, name: str) -> list[str]:
    found = []
    for since, until in RANGES:
        p = {"d": name, "since": sql_time(since), "until": sql_time(until)}
        for keys in ("deployment, team", "toStartOfHour(minute) AS hour, deployment, team"):
            grouped = keys.replace("toStartOfHour(minute) AS ", "")
            answer = "sum(allocated_cost_usd), sum(toUInt64(tokens))"
            order = f"WHERE deployment = {{d:String}} GROUP BY {grouped} ORDER BY {grouped}"
            in_range = order.replace("WHERE", f"WHERE {IN_RANGE} AND")
            raw = _rows(store, f"SELECT {keys}, {answer} FROM ({RAW_ALLOCATED}) {in_range}", p)
            assert raw, "a comparison of nothing"
            today = _rows(store, f"SELECT {keys}, {answer} FROM gpu_cost_allocated({RANGED}) {order}", p)
            hourly = _rows(store, f"SELECT {grouped}, {answer} FROM gpu_allocated_hourly({RANGED}) {order}", p)
            for what, rows in (("today's view", today), ("gpu_allocated_hourly", hourly)):
                if rows != raw:
                    found.append(f"{what} by {grouped} ({since:%H:%M:%S}–{until:%H:%M:%S}): {rows[:3]} against "
                                 f"{raw[:3]}")
    return found


def _held(store, name: str) -> int:
    return store.query("SELECT count() FROM gpu_allocated_hours FINAL WHERE deployment = {d:String}",
                       {"d": name}).scalar()


def _watermark(store) -> str:
    return str(store.query("SELECT gpu_allocated_hours FROM rollup_watermarks").scalar())


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def test_hours_equal_the_allocation_of_raw_events_through_late_usage_samples_and_prices(embedded_store) -> None:
    store = embedded_store
    d = _deployment(store)
    _samples(store, d.name, [m for m in range(180) if m % 11 != 5])  # three hours, a few minutes without samples
    events = [e for minute in range(180) if minute % 3 != 2 for e in _events(d.name, minute, 4 + minute % 9)]
    _store_events(store, events)
    _store_events(store, events[::5])  # re-delivered
    conflicting = dict(events[7], input_tokens=events[7]["input_tokens"] + 999)  # same id, other content
    _store_events(store, [conflicting])
    assert _differences(store, d.name) == [], "every hour pending: live"

    _maintain(store)
    assert _held(store, d.name) >= 3 * 3  # the hours and teams the comparisons below read from the grain
    assert _watermark(store) > sql_time(T0 + timedelta(hours=3))
    assert _differences(store, d.name) == [], "maintained"

    _store_events(store, _events(d.name, 64, 9, tag="late-", extra_tokens=5_000))  # late usage in hour 11
    assert _watermark(store) <= sql_time(T0 + timedelta(hours=1))
    assert _differences(store, d.name) == [], "late usage pending"
    _maintain(store)
    assert _differences(store, d.name) == [], "late usage maintained"

    _samples(store, d.name, range(121, 140, 6), seconds=(13,))  # late GPU samples in hour 12
    assert _watermark(store) <= sql_time(T0 + timedelta(hours=2))
    assert _differences(store, d.name) == [], "a late sample pending"
    _maintain(store)
    assert _differences(store, d.name) == [], "a late sample maintained"

    # a new price from 11:30 on, applied to the past through gpu-reprice
    repriced = d.model_copy(update={"usd_per_gpu_hour": None, "prices": (
        GpuPrice(effective_from=datetime(2020, 1, 1, tzinfo=timezone.utc), usd_per_gpu_hour=Decimal("2.47")),
        GpuPrice(effective_from=T0 + timedelta(hours=1, minutes=30), usd_per_gpu_hour=Decimal("3.1")))})
    reprice_gpu(store, {d.name: repriced}, [d.name])
    assert _watermark(store) <= sql_time(T0)
    assert _differences(store, d.name) == [], "re-priced, pending"
    _maintain(store)
    assert _differences(store, d.name) == [], "re-priced, maintained"


def test_the_cookbook_example_and_the_panel_equal_the_allocation_of_raw_events(embedded_store) -> None:
    """The cookbook's "GPU cost allocated to teams" and the dashboard's panel (at All and with a team filter from the
    hours; with a feature or customer filter split live and filtered after the split) against raw."""
    from bench.read_scale_readers import DASHBOARD, cookbook_examples, grafana_sql

    store = embedded_store
    start = datetime(2023, 12, 5, 22, 0, tzinfo=timezone.utc)
    d = _deployment(store, usd="1.93")
    shift = start - T0
    store.insert_arrow("gpu_samples", gpu_sample_table([
        GpuSample(ts=start + timedelta(minutes=m, seconds=s), interval_s=20, deployment=d.name,
                  prompt_tokens_delta=5_003 + m, generation_tokens_delta=211 + 3 * m, gpu_utilization=0.5)
        for m in range(240) if m % 13 != 4 for s in (5, 25, 45)]))
    events = [dict(e, ts=(datetime.fromisoformat(e["ts"]) + shift).isoformat())
              for minute in range(240) if minute % 4 != 1 for e in _events(d.name, minute, 3 + minute % 7, tag="cb-")]
    _store_events(store, events)
    _store_events(store, events[::3])  # re-delivered
    _maintain(store)
    assert _held(store, d.name) >= 4 * 3

    title, params, sql = next(e for e in cookbook_examples() if e[0] == "GPU cost allocated to teams")
    for since, until in (("2023-12-05", "2023-12-07"), ("2023-12-06", "2023-12-07"), ("2023-12-05", "2023-12-06")):
        p = params | {"since": since, "until": until}
        raw = _rows(store, f"SELECT deployment, team, sum(allocated_cost_usd) FROM ({RAW_ALLOCATED}) "
                           "WHERE minute >= toDateTime({since:Date}, 'UTC') "
                           "AND minute < toDateTime({until:Date}, 'UTC') "
                           "GROUP BY deployment, team ORDER BY deployment, team", p)
        assert raw, "a comparison of nothing"
        assert sorted(_rows(store, sql, p)) == raw, (title, since, until)

    panels = orjson.loads(DASHBOARD.read_text())["panels"]
    panel = next(q for q in panels if q["title"] == "GPU cost allocated to teams")
    template = panel["targets"][0]["rawSql"]
    for now, span in ((start + timedelta(hours=3, minutes=22, seconds=13), timedelta(hours=3)),
                      (start + timedelta(hours=4), timedelta(hours=2)),
                      (start + timedelta(hours=1, minutes=40), timedelta(minutes=25))):
        lo, hi = int((now - span).timestamp()), int(now.timestamp())
        for variable, value, where in (("", "", "1"), ("team", "t1", "team = 't1'"),
                                       ("feature", "f0", "feature = 'f0'"), ("customer", "c2", "customer = 'c2'")):
            filtered = template.replace(f"${{{variable}:singlequote}}", f"'{value}'") if variable else template
            rolled = _rows(store, grafana_sql(filtered, now=now, span=span, interval="1 HOUR"), {})
            raw = _rows(store, f"SELECT team, sum(allocated_cost_usd) FROM ({RAW_ALLOCATED}) "
                               f"WHERE minute >= toDateTime({lo}) "
                               f"AND minute < toDateTime({hi}) + toIntervalMillisecond(1) "
                               f"AND {where} GROUP BY team ORDER BY team", {})
            assert raw, "a comparison of nothing"
            assert sorted(rolled) == raw, (now, span, variable)


def test_a_store_with_data_upgrades_to_the_hours_with_identical_answers(tmp_path) -> None:
    from tests.conftest import run_in_own_process

    report = orjson.loads(run_in_own_process("test_gpu_allocated_hours", "upgrade_check", tmp_path / "old"))
    assert report["before"], "a comparison of nothing"
    assert report["hourly"] == report["before"], "backfilled: read from the hours"
    assert report["held"] >= 3 * 3
    assert report["maintained"] == report["before"]


def upgrade_check(path: str) -> None:
    """A store at migration 32 with three hours of samples and usage (2023-12) migrated to 33: today's view before,
    the hours after (backfilled and recorded done, so read from the grain), and after a maintainer's pass."""
    from spendstream.sinks.embedded import EmbeddedStore

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = tuple(m for m in every if m.version < 33)
    migrations.migrate(store)
    d = Deployment(name="upgraded", gpu_type="H100", gpu_count=2, usd_per_gpu_hour=Decimal("3.3"))
    store.insert_arrow("gpu_deployments", deployment_table([d]))  # as a worker of migration 32 stored them
    store.insert_arrow("gpu_prices", price_table([(d, period) for period in d.periods], now=datetime.now(timezone.utc)))
    shift = datetime(2023, 12, 20, 5, 0, tzinfo=timezone.utc) - T0
    store.insert_arrow("gpu_samples", gpu_sample_table([
        GpuSample(ts=T0 + shift + timedelta(minutes=m, seconds=s), interval_s=20, deployment=d.name,
                  prompt_tokens_delta=4_001 + m, generation_tokens_delta=99 + m, gpu_utilization=0.4)
        for m in range(180) if m % 17 != 3 for s in (1, 21, 41)]))
    events = [dict(e, ts=(datetime.fromisoformat(e["ts"]) + shift).isoformat())
              for minute in range(180) if minute % 5 != 2 for e in _events(d.name, minute, 2 + minute % 8, tag="up-")]
    _store_events(store, events)
    _store_events(store, events[::4])  # re-delivered
    p = {"since": "2023-12-20 05:17:00.000", "until": "2023-12-20 08:00:00.000"}
    answer = ("SELECT toString(toStartOfHour({t})), deployment, team, toString(sum(allocated_cost_usd)) "
              "FROM {view}(since = {{since:DateTime64(3, 'UTC')}}, until = {{until:DateTime64(3, 'UTC')}}) "
              "GROUP BY ALL ORDER BY ALL")
    before = store.query(answer.format(t="minute", view="gpu_cost_allocated"), p).rows
    migrations.MIGRATIONS = every
    assert 33 in migrations.migrate(store)
    hourly = answer.format(t="hour", view="gpu_allocated_hourly")
    report = {"before": before, "hourly": store.query(hourly, p).rows,
              "held": store.query("SELECT count() FROM gpu_allocated_hours FINAL").scalar()}
    _maintain(store)
    report["maintained"] = store.query(hourly, p).rows
    store.close()
    print(orjson.dumps(report).decode())
