"""The worker's Prometheus metrics: what it consumed, stored, dead-lettered, and how far behind it is.

One registry per app (no module-level state: two apps in one process, as the tests run
them, keep their own numbers). Two kinds of metric live in it:

- those the app observes as things happen (events consumed, batch write latency, rollup
  lag, detection pass duration, alert deliveries): prometheus-client's own Counter,
  Histogram and Gauge;
- those other parts already count (the consumer loops' records, offsets and high waters;
  the sink writer's :class:`~spendstream.sinks.writer.WriteTally`): a collector reads them
  at scrape time and builds fresh families, so the sinks and the consumer loop need no
  Prometheus, and a partition this worker no longer holds leaves the lag gauge at once.

Label values are bounded: a record kind (usage, gpu, ledger), a dead letter's reason
*kind* (:data:`~spendstream.batches.DEAD_LETTER_KINDS`, never the free text), a partition,
a configured alert destination.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spendstream.agents.consumer import ConsumerLoop
from spendstream.alerting.cycle import CycleReport
from spendstream.sinks.rollups import Maintained
from spendstream.sinks.writer import SinkWriter

PREFIX = "spendstream"
# An insert of a big block takes tens of milliseconds; a ClickHouse outage makes a write take
# as long as the outage (the writer retries until it is durable).
WRITE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DETECT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class WorkerMetrics:
    """The metrics of one worker app; ``registry`` is what /metrics serves."""

    def __init__(self, *, loops: Sequence[ConsumerLoop], writer: SinkWriter) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            f"{PREFIX}_events_consumed", "Events decoded from consumed Kafka records (valid and dead-lettered), "
            "by record kind; a re-delivered record counts again.", ["kind"], registry=r)
        self.write_seconds = Histogram(
            f"{PREFIX}_batch_write_seconds", "Seconds from a processed batch to its rows being durable in "
            "ClickHouse, retries included, by record kind.", ["kind"], buckets=WRITE_BUCKETS_S, registry=r)
        self.rollup_seconds_behind = Gauge(
            f"{PREFIX}_rollup_seconds_behind", "How far the minute rollup trails the newest events (the oldest "
            "period still pending), as the group's leader last computed it; absent on other workers.", registry=r)
        self.rollup_periods = Counter(
            f"{PREFIX}_rollup_periods_recomputed", "Rollup periods the leader recomputed from raw events.",
            registry=r)
        self.rollup_failures = Counter(
            f"{PREFIX}_rollup_maintenance_failures", "Rollup maintenance passes the store failed (retried next "
            "tick).", registry=r)
        self.detection_seconds = Histogram(
            f"{PREFIX}_detection_pass_seconds", "Seconds one detection pass took on the leader (the detectors' "
            "queries and storing new alerts; delivery not included).", buckets=DETECT_BUCKETS_S, registry=r)
        self.alerts_raised = Counter(f"{PREFIX}_alerts_raised", "New alerts the detectors stored.", registry=r)
        self.alert_deliveries = Counter(
            f"{PREFIX}_alert_deliveries", "Alert deliveries per destination by outcome: delivered, failed (for "
            "good, not retried) or retrying (failed, to be sent again).", ["destination", "outcome"], registry=r)
        r.register(_CountedElsewhere(loops, writer))

    def consumed(self, kind: str, *, events: int) -> None:
        self.events_consumed.labels(kind).inc(events)

    def maintained(self, done: Maintained) -> None:
        self.rollup_periods.inc(done.periods)
        self.rollup_seconds_behind.set(done.seconds_behind)

    def alerting(self, done: CycleReport) -> None:
        self.detection_seconds.observe(done.detect_s)
        self.alerts_raised.inc(done.raised)
        if done.delivery is not None:
            for destination, outcomes in done.delivery.outcomes.items():
                for outcome, n in outcomes.items():
                    self.alert_deliveries.labels(destination, outcome).inc(n)


class _CountedElsewhere(Collector):
    """Families built at each scrape from the consumer loops' and the sink writer's own counts."""

    def __init__(self, loops: Sequence[ConsumerLoop], writer: SinkWriter) -> None:
        self.loops, self.writer = loops, writer

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(f"{PREFIX}_records_consumed", "Kafka records fetched, by topic; a "
                                      "re-delivered record counts again.", labels=["topic"])
        commit_failures = CounterMetricFamily(f"{PREFIX}_commit_failures", "Offset commits that failed after the "
                                              "rows were written (the batch comes again and is deduplicated).",
                                              labels=["topic"])
        lag = GaugeMetricFamily(f"{PREFIX}_consumer_lag_records", "Records in a partition this worker holds that "
                                "are not stored yet (high water minus committed offset).",
                                labels=["topic", "partition"])
        held = GaugeMetricFamily(f"{PREFIX}_partitions_assigned", "Partitions this worker holds, by topic.",
                                 labels=["topic"])
        for loop in self.loops:
            records.add_metric([loop.topic], loop.records)
            commit_failures.add_metric([loop.topic], loop.commit_failures)
            held.add_metric([loop.topic], len(loop.assigned or ()))
            for partition, behind in loop.lag().items():
                lag.add_metric([loop.topic, str(partition)], behind)
        yield from (records, commit_failures, lag, held)

        counts = self.writer.tally.snapshot()
        stored = CounterMetricFamily(f"{PREFIX}_events_stored", "Rows made durable in ClickHouse, by record kind "
                                     "(usage events new to the store; copies and conflicts are counted apart).",
                                     labels=["kind"])
        dead = CounterMetricFamily(f"{PREFIX}_dead_letters", "Records or events stored as dead letters, by record "
                                   "kind and the kind of reason.", labels=["kind", "reason"])
        for key, n in sorted(counts.items()):
            if key[0] == "stored":
                stored.add_metric([key[1]], n)
            elif key[0] == "dead_letters":
                dead.add_metric([key[1], key[2]], n)
        yield stored
        yield dead
        for name, text in (
                ("redelivered", "Usage events dropped as identical copies of stored ones (re-deliveries, re-sends)."),
                ("conflicts", "Conflicting copies of stored usage events: recorded, not applied."),
                ("store_retries", "ClickHouse inserts that failed and were retried.")):
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=counts.get((name,), 0))
