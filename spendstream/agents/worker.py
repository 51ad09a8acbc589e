"""Running a worker: wait for Kafka and the store, migrate, serve queries, consume until stopped."""

from __future__ import annotations

import logging

import faust

from spendstream.agents.app import create_app
from spendstream.alerting.cycle import AlertingConfig
from spendstream.localbroker import free_port
from spendstream.pricing.deployments import load_deployments
from spendstream.pricing.engine import Pricer
from spendstream.pricing.overrides import load_overrides
from spendstream.settings import Settings
from spendstream.sinks import endpoint as query_endpoint
from spendstream.sinks.gpu_prices import sync_prices
from spendstream.sinks.loopback import ensure_secret
from spendstream.sinks.migrations import on_cluster
from spendstream.sinks.retention import apply_retention
from spendstream.sinks.rows import deployment_table
from spendstream.startup import Startup, open_migrated_store, store_dependency, wait_for_kafka

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, bootstrap_servers: str, pricer: Pricer | None = None) -> None:
    """Run one worker until SIGINT/SIGTERM. Owns the embedded data directory while it runs.

    The overrides, deployments, alert routes and budgets files are loaded first: a mistake
    in any stops the worker before it consumes anything (the error names file, line and field).
    Then it waits for Kafka and ClickHouse to answer, up to ``settings.startup_timeout_s``
    (:class:`~spendstream.startup.StartupError` after that, or at once if one refuses).
    """
    pricer = pricer or Pricer(load_overrides(settings.overrides_file))
    deployments = load_deployments(settings.deployments_file)
    alerting = AlertingConfig.from_settings(settings)
    for name, problem in alerting.problems().items():  # the others are served; this one's deliveries fail
        log.warning("alert destination %r cannot work: %s", name, problem)
    store_dependency(settings)  # a store URL that cannot be right fails now, not after Kafka answers
    startup = Startup(timeout_s=settings.startup_timeout_s)
    topics = {settings.usage_topic: settings.topic_partitions, settings.gpu_topic: 1, settings.ledger_topic: 1}
    if settings.otlp_topic:  # the Collector's exporter may create it first; then its partitions stay as they are
        topics[settings.otlp_topic] = settings.topic_partitions
    wait_for_kafka(startup, bootstrap_servers, topics)
    store = open_migrated_store(startup, settings)
    cluster = settings.clickhouse_cluster
    apply_retention(lambda sql: store.command(on_cluster(sql, cluster) if cluster else sql),
                    raw_days=settings.raw_retention_days, rollup_days=settings.rollup_retention_days,
                    dead_letter_days=settings.dead_letter_retention_days)
    if deployments:
        store.insert_arrow("gpu_deployments", deployment_table(list(deployments.values())))
        sync_prices(store, deployments)  # new price periods only: a stored one changes through gpu-reprice
    web_port = settings.web_port or free_port()
    # Only a worker that owns the embedded directory serves queries (others' stores answer for themselves);
    # the secret exists before the endpoint file that tells clients where to send it.
    query_secret = ensure_secret(settings.data_dir) if settings.embedded else None
    app = create_app(settings, bootstrap_servers=bootstrap_servers, store=store, web_port=web_port, pricer=pricer,
                     deployments=deployments, query_secret=query_secret, alerting=alerting)
    if settings.embedded:
        query_endpoint.write_endpoint_file(settings.data_dir, f"http://127.0.0.1:{web_port}")
    try:
        faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    finally:
        if settings.embedded:
            query_endpoint.remove_endpoint_file(settings.data_dir)
        store.close()
