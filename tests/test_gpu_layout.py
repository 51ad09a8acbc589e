"""Migration 23 rebuilds ``gpu_samples`` sorted by (deployment, ts, sample_id), keeping every row.

A store at migration 22's layout (sorted by deployment and sample id) with a week of samples
from two deployments, some of them delivered twice, is migrated: ``gpu_minutely`` and the
sample totals are the same to the digit before and after, re-deliveries still collapse, and
a day's question now reads that day's samples instead of every sample of its month.
(In a process of its own: chdb opens one data directory per process.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

pytestmark = pytest.mark.integration

T0 = datetime(2026, 10, 5, 0, 0, tzinfo=timezone.utc)
SLOTS = 7 * 8_640  # a week of 10-second samples
TOTALS = ("SELECT deployment, count(), sum(prompt_tokens_delta), sum(generation_tokens_delta), "
          "sum(interval_s), uniqExact(sample_id) FROM gpu_samples FINAL GROUP BY deployment ORDER BY deployment")
MINUTELY = "SELECT * FROM gpu_minutely ORDER BY ALL"
A_DAY = ("SELECT count() FROM gpu_samples FINAL WHERE ts >= '2026-10-08 00:00:00' AND ts < '2026-10-09 00:00:00'")


def test_old_layout_with_data_migrates_to_the_time_layout(tmp_path) -> None:
    from tests.conftest import run_in_own_process

    report = orjson.loads(run_in_own_process("test_gpu_layout", "relayout_check", tmp_path / "old"))
    assert report["before"] == report["after"]
    # money is Decimal and must match to the digit; float averages only to their summation order
    assert _floats_rounded(report["minutely_before"]) == _floats_rounded(report["minutely_after"])
    assert report["after"] == [[name, SLOTS, SLOTS * 7_001, SLOTS * 333, SLOTS * 10.0, SLOTS]
                               for name in ("lay-a", "lay-b")]
    assert report["sorting_key"] == "deployment, ts, sample_id"
    assert report["day_after"] == report["day_before"] == 2 * 8_640
    # the day's rows are found through the sort key (a granule of neighbours at each end per deployment);
    # before, every granule of the month was read
    assert report["day_marks_after"] < report["day_marks_before"] / 2


def _floats_rounded(rows: list[list]) -> list[list]:
    return [[round(v, 9) if isinstance(v, float) else v for v in row] for row in rows]


def relayout_check(path: str) -> None:
    from spendstream.pricing.deployments import Deployment
    from spendstream.schemas.gpu import GpuSample
    from spendstream.sinks import migrations
    from spendstream.sinks.embedded import EmbeddedStore
    from spendstream.sinks.gpu_prices import price_table
    from spendstream.sinks.rows import deployment_table, gpu_sample_table

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = tuple(m for m in every if m.version < 23)
    migrations.migrate(store)
    deployments = {name: Deployment(name=name, gpu_type="H100", gpu_count=2, usd_per_gpu_hour=Decimal("2.47"))
                   for name in ("lay-a", "lay-b")}
    store.insert_arrow("gpu_deployments", deployment_table(list(deployments.values())))
    # the periods as a worker of migration 22 stored them (sync_prices now also marks gpu_marks, migration 33's)
    store.insert_arrow("gpu_prices", price_table([(d, p) for d in deployments.values() for p in d.periods],
                                                 now=datetime.now(timezone.utc)))
    # a week of 10-second samples per deployment (15 granules in all); sample ids are random, as the
    # exporter's are, so the old sort key holds no time order
    samples = [GpuSample(ts=T0 + timedelta(seconds=10 * (slot + 1)), interval_s=10, deployment=name,
                         prompt_tokens_delta=7_001, generation_tokens_delta=333, gpu_utilization=0.37)
               for slot in range(SLOTS) for name in deployments]
    store.insert_arrow("gpu_samples", gpu_sample_table(samples))
    store.insert_arrow("gpu_samples", gpu_sample_table(samples[::7]))  # re-delivered, stored again
    store.command("OPTIMIZE TABLE gpu_samples FINAL")

    def marks_read(sql: str) -> int:  # EXPLAIN ESTIMATE: database, table, parts, rows, marks
        return sum(int(r[-1]) for r in store.query(f"EXPLAIN ESTIMATE {sql}").rows)

    report = {"before": store.query(TOTALS).rows, "minutely_before": store.query(MINUTELY).rows,
              "day_before": store.query(A_DAY).scalar(), "day_marks_before": marks_read(A_DAY)}
    migrations.MIGRATIONS = every
    assert 23 in migrations.migrate(store)
    store.command("OPTIMIZE TABLE gpu_samples FINAL")
    report |= {"after": store.query(TOTALS).rows, "minutely_after": store.query(MINUTELY).rows,
               "day_after": store.query(A_DAY).scalar(), "day_marks_after": marks_read(A_DAY),
               "sorting_key": store.query("SELECT sorting_key FROM system.tables WHERE name = 'gpu_samples' "
                                          "AND database = currentDatabase()").scalar()}
    print(orjson.dumps(report, default=str).decode())
