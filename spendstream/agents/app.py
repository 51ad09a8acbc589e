"""The worker's faust app: the query endpoint, the consumer loops around the pure stages, and the
once-per-group work.

Usage and GPU records are consumed by :class:`~spendstream.agents.consumer.ConsumerLoop`
(write, then commit — offsets are ours, not faust's); faust runs the web server
(query endpoint, health), starts the loops as tasks, and runs the work one worker of the
group does for all on its elected leader: rollup maintenance, and detection with alert
delivery (agents/leadership.py says how a handover avoids sending an alert twice).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from datetime import datetime, timezone

import faust
from pydantic import SecretStr

from spendstream.agents.attribution import TagGuard
from spendstream.agents.consumer import ConsumerLoop
from spendstream.agents.leadership import Tenure, follow_leadership
from spendstream.agents.metrics import WorkerMetrics
from spendstream.agents.ops import Probes, ops_app, serve_ops
from spendstream.agents.spans import process_spans
from spendstream.agents.stages import isolated, process, process_gpu, process_ledger
from spendstream.alerting.cycle import AlertCycle, AlertingConfig, CycleReport
from spendstream.batches import BatchResult, GpuBatch, LedgerBatch, SourceRecord
from spendstream.detect.conflicts import conflict_alerts
from spendstream.detect.gpu import IdleGpuDetector, KvSaturationDetector
from spendstream.detect.unpriced import unpriced_alerts
from spendstream.ingest.genai import Attribution
from spendstream.pricing.deployments import Deployment
from spendstream.pricing.engine import Pricer
from spendstream.settings import Settings, ops_address
from spendstream.sinks import rollups
from spendstream.sinks.endpoint import QUERY_PATH, serve_query
from spendstream.sinks.store import Store, StoreClosed, StoreError
from spendstream.sinks.writer import SinkWriter

HEALTH_PATH = "/spendstream/health/"
# How long a leader handing over waits for its delivery pass beyond the pass's own deadline
# (the requests' timeouts are cut to the deadline; recording their outcomes takes the rest).
_HANDOVER_GRACE_S = 5.0
log = logging.getLogger(__name__)


def create_app(settings: Settings, *, bootstrap_servers: str, store: Store, web_port: int,
               pricer: Pricer | None = None, deployments: dict[str, Deployment] | None = None,
               query_secret: SecretStr | None = None, alerting: AlertingConfig | None = None) -> faust.App:
    """A faust app that prices usage records into ``store`` and stores GPU samples.

    On the group's leader it maintains the rollups and, every ``settings.detect_interval_s``,
    runs the detectors and stores their alerts, then delivers them when ``alerting`` has
    destinations. With ``query_secret`` (the worker owns the embedded store), it also serves
    the query endpoint to requests that carry that secret. With ``settings.ops_address``, it
    serves its Prometheus metrics and health probes there (agents/ops.py).
    """
    app = faust.App(
        f"{settings.consumer_group}-worker",
        broker=[f"kafka://{server}" for server in bootstrap_servers.split(",")],
        store="memory://",
        autodiscover=False,
        # faust's own group (its leader assignor) is joined before tasks start; a join is held
        # for half the session timeout, so keep it at Kafka's lower bound.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.5,
        web_enabled=True,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=web_port,
    )
    pricer = pricer or Pricer()
    tag_guard = TagGuard(settings.tag_value_limit)
    writer = SinkWriter(store, dedup_horizon_s=settings.dedup_horizon_s, billing_policy=settings.billing_policy)
    detectors = (IdleGpuDetector(deployments or {}), KvSaturationDetector(deployments or {}))
    if query_secret is not None:
        _serve_queries(app, store, secret=query_secret, port=web_port)

    # A bug must not stop the meter, nor cost the good records beside the one that
    # triggers it: `isolated` keeps the bytes of the records that fail, says why, goes on.
    async def handle_usage(records: list[SourceRecord]) -> None:
        batches, errors = isolated(lambda part: process(part, pricer, tag_guard), records,
                                   lambda dead: BatchResult(dead_letters=dead))
        _report(errors, "usage", len(records))
        for batch in batches:
            metrics.consumed("usage", events=batch.num_events + len(batch.dead_letters))
            with metrics.write_seconds.labels("usage").time():
                await store_usage(writer, batch)

    async def handle_gpu(records: list[SourceRecord]) -> None:
        batches, errors = isolated(process_gpu, records, lambda dead: GpuBatch(dead_letters=dead))
        _report(errors, "GPU", len(records))
        for batch in batches:
            metrics.consumed("gpu", events=len(batch.samples) + len(batch.dead_letters))
            now = datetime.now(timezone.utc)
            alerts = [alert for sample in sorted(batch.samples, key=lambda s: s.ts)
                      for detector in detectors for alert in detector.observe(sample, now)]
            with metrics.write_seconds.labels("gpu").time():
                await writer.write_gpu(batch, alerts)

    async def handle_ledger(records: list[SourceRecord]) -> None:
        batches, errors = isolated(process_ledger, records, lambda dead: LedgerBatch(dead_letters=dead))
        _report(errors, "ledger", len(records))
        for batch in batches:
            metrics.consumed("ledger", events=len(batch.entries) + len(batch.dead_letters))
            with metrics.write_seconds.labels("ledger").time():
                await writer.write_ledger(batch)

    attribution = Attribution(settings.otlp_attribution)
    skipped_spans: Counter[str] = Counter()  # spans that are not model calls, by why (served on the health page)

    async def handle_otlp(records: list[SourceRecord]) -> None:
        batches, errors = isolated(lambda part: process_spans(part, pricer, tag_guard, attribution=attribution,
                                                              encoding=settings.otlp_encoding),
                                   records, lambda dead: BatchResult(dead_letters=dead))
        _report(errors, "OTLP", len(records))
        for batch in batches:
            await store_usage(writer, batch)
            skipped_spans.update(batch.skipped)  # counted once written: a batch that is retried counts once

    loops = [
        ConsumerLoop(bootstrap_servers, settings.usage_topic, settings.consumer_group, handle_usage,
                     max_records=settings.batch_max_records, max_wait_s=settings.batch_max_wait_s),
        # one partition: one worker sees each deployment's samples in order
        ConsumerLoop(bootstrap_servers, settings.gpu_topic, f"{settings.consumer_group}.gpu", handle_gpu,
                     max_records=settings.batch_max_records, max_wait_s=settings.batch_max_wait_s),
        ConsumerLoop(bootstrap_servers, settings.ledger_topic, f"{settings.consumer_group}.ledger", handle_ledger,
                     max_records=settings.batch_max_records, max_wait_s=settings.batch_max_wait_s),
    ]
    if settings.otlp_topic:
        loops.append(ConsumerLoop(bootstrap_servers, settings.otlp_topic, f"{settings.consumer_group}.otlp",
                                  handle_otlp, max_records=settings.batch_max_records,
                                  max_wait_s=settings.batch_max_wait_s))

    metrics = WorkerMetrics(loops=loops, writer=writer)

    @app.task
    async def consume() -> None:
        await asyncio.gather(*(loop.run() for loop in loops))

    if settings.ops_address is not None:
        host, port = ops_address(settings.ops_address)
        probes = Probes(loops, store)

        @app.task
        async def serve_metrics_and_probes() -> None:
            await serve_ops(ops_app(metrics.registry, probes), host=host, port=port)

    # Once per worker group: faust elects a leader among the workers, and another takes over
    # when it leaves. Recomputing a period twice (a handover) gives the same rows.
    @app.timer(settings.rollup_interval_s, on_leader=True)
    async def maintain_rollups() -> None:
        await maintain_rollups_once(store, metrics, raw_retention_days=settings.raw_retention_days)

    # Also once per group, but its effects leave the store (alerts sent): it runs only while this
    # worker's tenure as leader lasts, which a handover ends before another worker can lead.
    tenure = Tenure()
    follow_leadership(app, tenure, handover_wait_s=settings.alert_pass_deadline_s + _HANDOVER_GRACE_S)
    alert_cycle = AlertCycle(store, alerting or AlertingConfig(), pass_deadline_s=settings.alert_pass_deadline_s,
                             request_timeout_s=settings.alert_request_timeout_s, may_send=tenure.active,
                             refresh_in_background=True)  # an hour's refresh must not hold that hour's alerts

    @app.timer(settings.detect_interval_s, on_leader=True)
    async def detect_and_deliver() -> None:
        if not tenure.active():
            return  # a rebalance is under way: the next leader (perhaps this worker again) takes over
        try:
            done = await tenure.run(alert_cycle.run)  # the detectors' queries and the requests block
        except Exception:  # the store or a bug: the alerts stay in the outbox, the next tick tries again
            log.exception("detection and alert delivery failed (retried next tick)")
            return
        metrics.alerting(done)
        _log_alerting(done)

    @app.page(HEALTH_PATH)
    class Health(faust.web.View):
        async def get(self, request: faust.web.Request) -> faust.web.Response:
            return self.text(json.dumps({"loops": [loop.health() for loop in loops], "leader": tenure.active(),
                                         "otlp_spans_skipped": dict(skipped_spans)}),
                             content_type="application/json")

    return app


async def maintain_rollups_once(store: Store, metrics: WorkerMetrics, *, raw_retention_days: int | None) -> None:
    """One tick of the leader's rollup maintenance: a store error is counted and logged (the next tick retries);
    a store closing under it (the worker stopping) is neither: there is no next tick, and nothing failed."""
    try:
        done = await asyncio.to_thread(rollups.maintain, store, now=datetime.now(timezone.utc),
                                       raw_retention_days=raw_retention_days)
    except StoreClosed:
        log.info("rollup maintenance stopped: the store is closing")
        return
    except StoreError as exc:
        metrics.rollup_failures.inc()
        log.warning("rollup maintenance failed (retried next tick): %s", exc)
        return
    metrics.maintained(done)
    if done.seconds_behind > 60:
        log.info("rollups: %d periods recomputed, %.0f s behind the newest events", done.periods,
                 done.seconds_behind)


async def store_usage(writer: SinkWriter, batch: BatchResult) -> None:
    """Write a processed usage batch with its unpriced-model alerts, then alert on any conflicting copies."""
    now = datetime.now(timezone.utc)
    conflicts = await writer.write(batch, unpriced_alerts(batch, now))
    if conflicts.num_rows:
        await writer.write_alerts(conflict_alerts(conflicts, now))


def _log_alerting(done: CycleReport) -> None:
    delivery = done.delivery
    if done.raised or (delivery is not None and (delivery.delivered or delivery.failed)):
        log.info("alerts: %d new, %d delivered, %d failed for good, %d pending", done.raised,
                 delivery.delivered if delivery else 0, delivery.failed if delivery else 0,
                 delivery.pending if delivery else 0)


def _report(errors: list[BaseException], kind: str, records: int) -> None:
    if errors:
        log.error("processing a batch of %d %s records failed (%d error(s)); each failing record is "
                  "dead-lettered alone, the rest are stored", records, kind, len(errors),
                  exc_info=(type(errors[-1]), errors[-1], errors[-1].__traceback__))


def _serve_queries(app: faust.App, store: Store, *, secret: SecretStr, port: int) -> None:
    """The loopback query endpoint (sinks/endpoint.py) on the faust app's web server (127.0.0.1:``port``)."""
    @app.page(QUERY_PATH)
    class QueryView(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await serve_query(store, request, secret=secret, port=port)
