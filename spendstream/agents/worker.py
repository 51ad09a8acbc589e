"""Running a worker: open the store, migrate, serve queries, consume until stopped."""

from __future__ import annotations

import faust

from spendstream.agents import query_endpoint
from spendstream.agents.app import create_app
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import free_port
from spendstream.pricing.engine import Pricer
from spendstream.pricing.overrides import load_overrides
from spendstream.settings import Settings
from spendstream.sinks import open_store
from spendstream.sinks.migrations import migrate


def run_worker(settings: Settings, *, bootstrap_servers: str, pricer: Pricer | None = None) -> None:
    """Run one worker until SIGINT/SIGTERM. Owns the embedded data directory while it runs.

    The overrides file is loaded first: a mistake in it stops the worker before it
    prices anything (OverridesError names file, line and field).
    """
    pricer = pricer or Pricer(load_overrides(settings.overrides_file))
    ensure_topics(bootstrap_servers, {settings.usage_topic: settings.topic_partitions})
    store = open_store(settings)
    migrate(store)
    web_port = settings.web_port or free_port()
    app = create_app(settings, bootstrap_servers=bootstrap_servers, store=store, web_port=web_port, pricer=pricer)
    if settings.embedded:
        query_endpoint.write_endpoint_file(settings.data_dir, f"http://127.0.0.1:{web_port}")
    try:
        faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    finally:
        if settings.embedded:
            query_endpoint.remove_endpoint_file(settings.data_dir)
        store.close()
