"""The faust app: a short loop around the pure stages in :mod:`spendstream.agents.stages`."""

from __future__ import annotations

from datetime import datetime, timezone

import faust

from spendstream.agents import query_endpoint
from spendstream.agents.attribution import TagGuard
from spendstream.agents.gpu import Deployment, IdleGpuDetector, KvSaturationDetector
from spendstream.agents.stages import SourceRecord, process, process_gpu
from spendstream.pricing.engine import Pricer
from spendstream.settings import Settings
from spendstream.sinks.store import Store
from spendstream.sinks.writer import SinkWriter


def create_app(settings: Settings, *, bootstrap_servers: str, store: Store, web_port: int,
               pricer: Pricer | None = None, deployments: dict[str, Deployment] | None = None) -> faust.App:
    """A faust app whose ``ingest`` agent prices usage records into ``store``.

    Write, then commit: ``take_events`` acks a batch only after the loop body
    that wrote it returns, and faust commits only acked offsets.
    """
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{server}" for server in bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A group join is held for half the session timeout; faust's 60 s default
        # means a 30 s start. These are Kafka's own lower bounds.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.5,
        web_enabled=True,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=web_port,
    )
    usage = app.topic(settings.usage_topic, value_serializer="raw", key_serializer="raw",
                      partitions=settings.topic_partitions)
    pricer = pricer or Pricer()
    tag_guard = TagGuard(settings.tag_value_limit)
    writer = SinkWriter(store)
    query_endpoint.register(app, store)

    @app.agent(usage, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max_records, within=settings.batch_max_wait_s):
            records = [SourceRecord(e.message.topic, e.message.partition, e.message.offset, e.message.value)
                       for e in events]
            await writer.write(process(records, pricer, tag_guard))

    # GPU samples: one partition, so one worker sees each deployment's samples in order (a few a minute).
    gpu = app.topic(settings.gpu_topic, value_serializer="raw", key_serializer="raw", partitions=1)
    detectors = (IdleGpuDetector(deployments or {}), KvSaturationDetector(deployments or {}))

    @app.agent(gpu, name="gpu_ingest")
    async def gpu_ingest(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max_records, within=settings.batch_max_wait_s):
            batch = process_gpu([SourceRecord(e.message.topic, e.message.partition, e.message.offset,
                                              e.message.value) for e in events])
            now = datetime.now(timezone.utc)
            alerts = [alert for sample in sorted(batch.samples, key=lambda s: s.ts)
                      for detector in detectors for alert in detector.observe(sample, now)]
            await writer.write_gpu(batch, alerts)

    return app
