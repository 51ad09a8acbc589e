"""The ``spendstream`` command: demo, up, worker, sql."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack

from spendstream.settings import Settings

log = logging.getLogger("spendstream")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spendstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="broker + worker, replay the bundled trace, print the cost tables")
    demo.add_argument("--limit", type=int, default=None, help="replay only the first N trace requests")
    demo.add_argument("--seed", type=int, default=None, help="seed of the generated attribution")

    commands.add_parser("up", help="local broker (unless configured) + worker, until Ctrl-C")
    commands.add_parser("worker", help="one worker against the configured Kafka and ClickHouse")

    sql = commands.add_parser("sql", help="run a query against the configured ClickHouse and print it")
    sql.add_argument("query")
    sql.add_argument("--format", default="PrettyCompact", help="any ClickHouse output format: CSV, JSONEachRow, …")
    sql.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="bind {NAME:Type} placeholders in the query (repeatable)")

    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"demo": _demo, "up": _up, "worker": _worker, "sql": _sql}
    try:
        return handlers[args.command](settings, args)
    except KeyboardInterrupt:
        return 130


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.demo.run import run_demo
    from spendstream.demo.traffic import DEFAULT_SEED

    summary = run_demo(settings, limit=args.limit, seed=args.seed if args.seed is not None else DEFAULT_SEED)
    return 0 if summary.balanced else 1


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.agents.worker import run_worker

    if not settings.kafka_bootstrap:
        print("spendstream worker: set SPENDSTREAM_KAFKA_BOOTSTRAP (or use `spendstream up`, "
              "which starts a local broker)", file=sys.stderr)
        return 2
    run_worker(settings, bootstrap_servers=settings.kafka_bootstrap)
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.agents.worker import run_worker
    from spendstream.kafka_admin import ensure_topics
    from spendstream.localbroker import LocalBroker

    with ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap or stack.enter_context(LocalBroker()).bootstrap_servers
        ensure_topics(bootstrap, {settings.usage_topic: settings.topic_partitions})
        print(f"spendstream up: broker {bootstrap}, topic {settings.usage_topic}, "
              f"store {'ClickHouse server' if not settings.embedded else settings.data_dir}. "
              f"Emit with SPENDSTREAM_KAFKA_BOOTSTRAP={bootstrap}; query with `spendstream sql`. Ctrl-C stops.",
              flush=True)
        try:
            run_worker(settings, bootstrap_servers=bootstrap)
        except SystemExit as exc:  # faust's worker exits through SystemExit; stop the broker first
            return int(exc.code or 0)
    return 0


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.agents.query_endpoint import EndpointUnavailable, QueryClient, QueryFailed
    from spendstream.sinks import StoreError, open_store

    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"spendstream sql: --param {item!r} must be NAME=VALUE", file=sys.stderr)
            return 2
        params[name] = value
    try:
        client = QueryClient.for_data_dir(settings.data_dir) if settings.embedded else None
        if client is not None:
            text = client.query_text(args.query, params, args.format)
        else:
            store = open_store(settings)
            try:
                text = store.query_text(args.query, params, args.format)
            finally:
                store.close()
    except (StoreError, QueryFailed, EndpointUnavailable) as exc:
        print(f"spendstream sql: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
