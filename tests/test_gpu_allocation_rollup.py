"""GPU cost allocation from the ``deployment_minutes`` rollup equals the same split of raw events, to the digit.

The reference is the allocation as migrations 4 and 13 wrote it (usage read from
``usage_events FINAL``). It is asked before the rollup holds the minutes (read from raw
after its watermark), after maintaining, with a late event pending, and after maintaining
again; for the unranged views and for ``gpu_cost_allocated(since, until)``. Real chdb
(the session's shared store): samples and usage events stored as the worker stores them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.pricing.deployments import Deployment
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks import gpu_views, migrations, rollups
from spendstream.sinks.gpu_prices import sync_prices
from spendstream.sinks.rows import deployment_table, gpu_sample_table, usage_table
from spendstream.sinks.store import sql_time

pytestmark = pytest.mark.integration

T0 = datetime(2026, 10, 14, 8, 0, tzinfo=timezone.utc)
RAW_ALLOCATED = migrations._GPU_ALLOCATED.split(" AS\n", 1)[1]
RAW_BY_CONSUMER = gpu_views.BY_CONSUMER.split(" AS\n", 1)[1]
KEYS = "ORDER BY minute, deployment, team, feature, customer"


@pytest.fixture
def deployment(embedded_store) -> str:
    name = f"alloc-{uuid.uuid4().hex[:8]}"
    d = Deployment(name=name, gpu_type="H100", gpu_count=3, usd_per_gpu_hour=Decimal("2.47"),
                   prefill_cost_multiplier=Decimal(3))
    embedded_store.insert_arrow("gpu_deployments", deployment_table([d]))
    sync_prices(embedded_store, {name: d})
    return name


def _samples(store, name: str, minutes: range) -> None:
    store.insert_arrow("gpu_samples", gpu_sample_table([
        GpuSample(ts=T0 + timedelta(minutes=m, seconds=s), interval_s=20, deployment=name,
                  prompt_tokens_delta=7_001 + m, generation_tokens_delta=333 + 7 * m, gpu_utilization=0.37)
        for m in minutes for s in (7, 27, 47)]))


def _usage(store, name: str, minute: int, count: int, tag: str = "") -> None:
    """``count`` events in ``minute`` (seconds apart) naming the deployment, over three teams and several
    customers and features, and one that names none (not allocated anything)."""
    events = [{"event_id": f"{name}-{minute}-{tag}{i}",
               "ts": (T0 + timedelta(minutes=minute, seconds=3 + 5 * i, milliseconds=17)).isoformat(),
               "provider": "self-hosted", "model": "llama-3-70b", "deployment": name if i else None,
               "team": None if i % 5 == 4 else f"t{i % 3}", "feature": f"f{i % 2}",
               "customer": None if i % 4 == 3 else f"c{i % 7}",
               "input_tokens": 1_000 + 37 * i + minute, "output_tokens": 7 * i + 1} for i in range(count)]
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


def _rows(store, sql: str, params: dict) -> list[tuple[str, ...]]:
    return [tuple(str(v) for v in row) for row in store.query(sql, params).rows]


def _differences(store, name: str) -> list[str]:
    found = []
    for since, until in ((T0, T0 + timedelta(hours=1)),
                         (T0 + timedelta(minutes=1, seconds=30), T0 + timedelta(minutes=4)),
                         (T0 + timedelta(minutes=2), T0 + timedelta(minutes=2, seconds=1))):
        p = {"d": name, "since": sql_time(since), "until": sql_time(until)}
        where = ("deployment = {d:String} AND minute >= {since:DateTime64(3, 'UTC')} "
                 "AND minute < {until:DateTime64(3, 'UTC')}")
        raw = _rows(store, f"SELECT * FROM ({RAW_ALLOCATED}) WHERE {where} {KEYS}", p)
        assert raw, "a comparison of nothing"
        for sql in (f"SELECT * FROM gpu_cost_allocated_minutely WHERE {where} {KEYS}",
                    "SELECT * FROM gpu_cost_allocated(since = {since:DateTime64(3, 'UTC')}, "
                    f"until = {{until:DateTime64(3, 'UTC')}}) WHERE deployment = {{d:String}} {KEYS}"):
            rolled = _rows(store, sql, p)
            if rolled != raw:
                found.append(f"{sql[:60]} ({since:%H:%M:%S}–{until:%H:%M:%S}): {rolled[:3]} against {raw[:3]}")
        raw = _rows(store, f"SELECT * FROM ({RAW_BY_CONSUMER}) WHERE {where} {KEYS}", p)
        rolled = _rows(store, f"SELECT * FROM gpu_cost_by_consumer_minutely WHERE {where} {KEYS}", p)
        if rolled != raw:
            found.append(f"by consumer ({since:%H:%M:%S}–{until:%H:%M:%S}): {rolled[:3]} against {raw[:3]}")
    return found


def _watermark(store) -> str:
    return str(store.query("SELECT deployment_minutes FROM rollup_watermarks").scalar())


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def test_allocation_from_the_rollup_equals_raw_through_late_events(embedded_store, deployment) -> None:
    store = embedded_store
    _samples(store, deployment, range(6))
    for minute, count in ((0, 9), (1, 13), (2, 4), (3, 11)):  # minute 4 and 5: GPUs without usage
        _usage(store, deployment, minute, count)
    assert _differences(store, deployment) == [], "from raw (the rollup has not computed these minutes)"

    _maintain(store)
    held = store.query("SELECT count() FROM deployment_minutes FINAL WHERE deployment = {d:String}",
                       {"d": deployment}).scalar()
    assert held > 4  # the comparisons below read the rollup
    assert _watermark(store) > sql_time(T0 + timedelta(minutes=6))
    allocated = store.query("SELECT allocated_cost_usd FROM gpu_cost_allocated(since = {s:DateTime64(3, 'UTC')}, "
                            "until = {u:DateTime64(3, 'UTC')}) WHERE deployment = {d:String}",
                            {"d": deployment, "s": sql_time(T0 + timedelta(minutes=1)),
                             "u": sql_time(T0 + timedelta(minutes=2))}).rows
    assert len({row[0] for row in allocated}) > 3  # a real split with truncated shares, not one key holding it all
    assert _differences(store, deployment) == [], "maintained"

    _usage(store, deployment, 2, 6, tag="late-")  # a late arrival reopens minute 2
    assert _watermark(store) <= sql_time(T0 + timedelta(minutes=2))
    assert _differences(store, deployment) == [], "late events pending"
    _maintain(store)
    assert _differences(store, deployment) == [], "maintained again"
