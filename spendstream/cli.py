"""The ``spendstream`` command line: every command, its help, and the handler behind it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from spendstream.settings import Settings

log = logging.getLogger("spendstream")


def build_parser() -> argparse.ArgumentParser:
    """Every command and its arguments; the help derives what it can from what is registered."""
    parser = argparse.ArgumentParser(prog="spendstream", description="Meter what AI inference costs, as it happens.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")

    demo = commands.add_parser("demo", help="broker + worker, replay the bundled trace, print the cost tables")
    demo.add_argument("--limit", type=int, default=None, help="replay only the first N trace requests")
    demo.add_argument("--seed", type=int, default=None, help="seed of the generated attribution")

    commands.add_parser("up", help="local broker (unless configured) + worker, until Ctrl-C")
    commands.add_parser("worker", help="one worker against the configured Kafka and ClickHouse")
    commands.add_parser("store", help="own the embedded data directory and serve it to several local workers")

    sql = commands.add_parser("sql", help="run a query against the configured ClickHouse and print it")
    sql.add_argument("query")
    sql.add_argument("--format", default="PrettyCompact", help="any ClickHouse output format: CSV, JSONEachRow, …")
    sql.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="bind {NAME:Type} placeholders in the query (repeatable)")
    sql.add_argument("--write", action="store_true", help="allow statements that change data (refused otherwise)")

    reprice = commands.add_parser("reprice", help="price a past period again with today's catalog and overrides")
    _period(reprice, required=True)
    reprice.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")

    gpu_reprice = commands.add_parser("gpu-reprice", help="apply the deployments file's GPU prices to the past, "
                                                          "recording each day's correction")
    gpu_reprice.add_argument("--deployment", action="append", default=None,
                             help="only this deployment (repeat); default: every one in the file")

    export = commands.add_parser("export", help="export stored usage in a standard format")
    export_formats = export.add_subparsers(dest="format", required=True)
    focus = export_formats.add_parser("focus", help="FOCUS 1.3 cost and usage rows (hourly, per token-type meter)")
    _period(focus, required=True)
    focus.add_argument("--out", type=Path, required=True, help="file.csv or file.parquet")
    stripe = export_formats.add_parser("stripe", help="Stripe meter events (JSON lines) from the loaded price book")
    stripe.add_argument("--since", required=True, help="start of the first whole period: ISO date/datetime (UTC)")
    stripe.add_argument("--until", default=None, help="end of the last whole period; default the current one's start")
    stripe.add_argument("--grain", choices=("day", "hour"), default="day",
                        help="one event per customer, meter and period of this length")
    stripe.add_argument("--out", type=Path, default=None, help="file.jsonl (default stdout)")

    pricebook = commands.add_parser("pricebook", help="the resale price book: what customers pay, beside cost")
    pricebook_commands = pricebook.add_subparsers(dest="pricebook_command", required=True)
    pricebook_load = pricebook_commands.add_parser("load", help="validate a price book file and make it current")
    pricebook_load.add_argument("file", type=Path, nargs="?", default=None,
                                help="YAML/JSON price book (default SPENDSTREAM_PRICEBOOK_FILE); see docs/resale.md")

    prices = commands.add_parser("prices", help="what a model costs and where the price comes from")
    prices_commands = prices.add_subparsers(dest="prices_command", required=True)
    show = prices_commands.add_parser("show", help="unit prices of one model at an instant")
    show.add_argument("model", help="as services send it, e.g. gpt-4o, azure/gpt-4o, us.anthropic.claude-…")
    show.add_argument("--provider", default=None, help="e.g. openai, anthropic, google, bedrock (default: a gateway "
                                                       "prefix's, else the provider the catalog gives the model)")
    show.add_argument("--at", default=None, help="ISO date or datetime (UTC unless a zone is given); default now")
    show.add_argument("--mode", default="realtime", choices=("realtime", "batch"))
    show.add_argument("--service-tier", default=None)
    show.add_argument("--team", default=None)
    show.add_argument("--customer", default=None)

    report = commands.add_parser("report", help="one self-contained HTML file with charts and the tables behind them")
    _period(report, required=False)
    report.add_argument("--out", type=Path, default=Path("report.html"))

    advise_cmd = commands.add_parser("advise", help="dollar-estimated savings opportunities in the metered traffic")
    _period(advise_cmd, required=False)
    advise_cmd.add_argument("--format", choices=("text", "json"), default="text")

    recon = commands.add_parser("reconcile", help="emitted vs stored events per source and minute; names any gap")
    _period(recon, required=True)
    recon.add_argument("--all", action="store_true", help="print every interval, not only those with a gap")
    recon.add_argument("--invoices", action="store_true", help="imported invoice lines vs metered cost per day × "
                                                               "provider × model, instead of emitted vs stored")
    recon.add_argument("--tolerance-usd", type=Decimal, default=Decimal("0.01"),
                       help="with --invoices: a difference up to this many USD matches")
    recon.add_argument("--tolerance-relative", type=Decimal, default=Decimal("0.01"),
                       help="with --invoices: a difference up to this fraction of the larger side matches")

    invoices = commands.add_parser("invoices", help="the provider's bill: import cost exports to reconcile with")
    invoices_commands = invoices.add_subparsers(dest="invoices_command", required=True)
    invoices_import = invoices_commands.add_parser("import", help="OpenAI organization costs JSON, Anthropic cost "
                                                                  "report JSON or a FOCUS CSV into invoice_lines")
    invoices_import.add_argument("files", type=Path, nargs="+", metavar="FILE")

    notify = commands.add_parser("notify", help="detect, then deliver stored alerts to Slack, PagerDuty and webhooks "
                                                "(workers do this on their own when SPENDSTREAM_ALERT_ROUTES is set "
                                                "for them: run this where they do not, or with --once)")
    notify.add_argument("--once", action="store_true", help="one pass over what is due, then exit: 0 all delivered, "
                                                            "1 a delivery failed for good or a detector failed, "
                                                            "75 some still pending")
    notify.add_argument("--interval", type=float, default=10.0, help="seconds between looks at the outbox")
    notify.add_argument("--deadline", type=float, default=30.0,
                        help="seconds one pass may spend sending: what a destination that never answers costs at most")

    dead = commands.add_parser("dead-letters", help="what could not be stored, and sending it again after a fix")
    dead_commands = dead.add_subparsers(dest="dead_command", required=True)
    replay = dead_commands.add_parser("replay", help="re-submit dead letters' stored bytes through the normal path")
    replay.add_argument("--reason", default=None, help="only dead letters whose reason contains this text")
    replay.add_argument("--since", default="30d", help="received since (ISO date/datetime, or 7d / 12h / 30m ago)")
    replay.add_argument("--dry-run", action="store_true", help="say what each would give now; send nothing")
    replay.add_argument("--again", action="store_true", help="include dead letters replayed before")
    replay.add_argument("--limit", type=int, default=10_000, help="at most this many, oldest first")
    replay.add_argument("--wait", type=float, default=30.0, help="seconds to watch for what the workers did")

    ingest = commands.add_parser("ingest", help="serve POST /v1/usage: usage events over HTTP into Kafka")
    ingest.add_argument("--host", default=None, help="bind address (default SPENDSTREAM_INGEST_HOST, 127.0.0.1)")
    ingest.add_argument("--port", type=int, default=None, help="port (default SPENDSTREAM_INGEST_PORT, 8470)")
    ingest.add_argument("--insecure-no-auth", action="store_true",
                        help="serve without a token (only on a loopback address)")

    gpu = commands.add_parser("gpu-exporter", help="scrape a serving engine's /metrics and emit GpuSamples")
    gpu.add_argument("--deployment", required=True, help="the name usage events give as `deployment`")
    gpu.add_argument("--url", action="append", required=True, help="engine /metrics URL (repeat for several)")
    gpu.add_argument("--engine", default="auto", choices=("auto", "vllm", "sglang", "tgi", "triton"))
    gpu.add_argument("--dcgm-url", default=None, help="NVIDIA dcgm-exporter /metrics, for GPU utilisation")
    gpu.add_argument("--dcgm-pod", action="append", default=[],
                     help="keep dcgm series of these pods (shell patterns; repeat); default: the whole node")
    gpu.add_argument("--dcgm-namespace", default=None, help="keep dcgm series of this Kubernetes namespace")
    gpu.add_argument("--dcgm-container", action="append", default=[], help="keep dcgm series of these containers")
    gpu.add_argument("--gpu-uuid", action="append", default=[], help="keep dcgm series of these GPUs (repeat)")
    gpu.add_argument("--interval", type=float, default=15.0, help="seconds between scrapes")
    gpu.add_argument("--model", default=None, help="the served model, where the engine's metrics do not name it")
    gpu.add_argument("--delivery-timeout", type=float, default=30.0,
                     help="with --once: seconds to wait for Kafka to acknowledge the sample")
    gpu.add_argument("--gpu-type", default=None)
    gpu.add_argument("--gpu-count", type=int, default=None)
    gpu.add_argument("--no-nvml", action="store_true", help="do not try the NVIDIA driver")
    gpu.add_argument("--once", action="store_true", help="scrape twice, one interval apart, emit one sample, exit")

    _describe_commands(parser, commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"demo": _demo, "up": _up, "worker": _worker, "sql": _sql, "reprice": _reprice,
                "export": _export, "prices": _prices, "gpu-reprice": _gpu_reprice, "gpu-exporter": _gpu_exporter,
                "report": _report, "advise": _advise, "store": _store_host,
                "reconcile": _reconcile, "notify": _notify, "dead-letters": _dead_letters, "ingest": _ingest,
                "invoices": _invoices, "pricebook": _pricebook}
    try:
        return handlers[args.command](settings, args)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"spendstream {args.command}: {exc}", file=sys.stderr)
        return 2


def _describe_commands(parser: argparse.ArgumentParser, commands: argparse._SubParsersAction) -> None:
    """Help derived from what is registered: the commands that have subcommands list them at the top, and the
    long-running ones list the SPENDSTREAM_* variables of the settings groups they read (settings.COMMAND_SETTINGS)."""
    from spendstream.settings import COMMAND_SETTINGS

    nested = [f"{name} {sub}" for name, command in commands.choices.items() for action in command._actions
              if isinstance(action, argparse._SubParsersAction) for sub in action.choices]
    parser.epilog = ("subcommands: " + ", ".join(nested) + "\n" if nested else "") + (
        "`spendstream <command> --help` says more; settings are SPENDSTREAM_* environment variables.")
    for name, groups in COMMAND_SETTINGS.items():
        command = commands.choices[name]
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        command.epilog = "environment variables:\n" + "\n".join(_variable_help(groups + (Settings,)))


def _variable_help(groups: tuple[type, ...]) -> list[str]:
    """One entry per field the settings groups declare (a field of several groups once), with its default."""
    import textwrap

    seen: dict[str, str] = {}
    for group in groups:
        own = group.model_fields if group is not Settings else {
            name: f for name, f in Settings.model_fields.items() if name in Settings.__annotations__}
        for name, info in own.items():
            if name in seen:
                continue
            default = info.get_default(call_default_factory=True)
            shown = "unset" if default is None else repr(default) if isinstance(default, str) else str(default)
            text = f"{info.description or ''} [default: {shown}]".strip()
            seen[name] = (f"  SPENDSTREAM_{name.upper()}\n"
                          + textwrap.fill(text, width=96, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return list(seen.values())


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


@contextmanager
def _secret_problems_as_usage_errors() -> Iterator[None]:
    """An endpoint secret that cannot be used (missing, another user's, readable by others) is a setup mistake."""
    from spendstream.sinks.loopback import SecretUnreadable

    try:
        yield
    except SecretUnreadable as exc:
        raise UsageError(str(exc)) from exc


def _period(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--since", required=required,
                        help="ISO date/datetime (UTC unless zoned), or 7d / 12h / 30m ago")
    parser.add_argument("--until", default=None, help="same forms; default now")


def parse_when(text: str, now: datetime) -> datetime:
    """``2026-11-01``, ``2026-11-01T12:00``, ``2026-11-01T12:00+01:00``, or ``7d``/``12h``/``30m`` before now."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a date, a datetime or a duration like 7d") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    since = parse_when(args.since, now)
    until = parse_when(args.until, now) if args.until else now
    if until <= since:
        raise UsageError(f"--until ({until:%Y-%m-%d %H:%M}) must be after --since ({since:%Y-%m-%d %H:%M})")
    return since, until


def _load_pricer(settings: Settings):
    from spendstream.pricing import OverridesError, Pricer, load_overrides

    try:
        return Pricer(load_overrides(settings.overrides_file))
    except OverridesError as exc:
        raise UsageError(f"overrides file is invalid:\n{exc}") from exc


def _with_store(settings: Settings, command: str, use, *, why: str = ""):
    """Run ``use(store)`` on the configured store; a clear message, ending in ``why``, if it cannot be opened
    (another process holds the embedded one)."""
    from spendstream.sinks import StoreError, open_store

    try:
        store = open_store(settings)
    except StoreError as exc:
        raise UsageError(f"{exc}. {why}".rstrip()) from exc
    try:
        from spendstream.sinks.migrations import migrate

        migrate(store, cluster=settings.clickhouse_cluster)
        return use(store)
    finally:
        store.close()


def _reprice(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.reprice import reprice

    since, until = _window(args)
    pricer = _load_pricer(settings)

    def run(store):
        return reprice(store, pricer, since, until, dry_run=args.dry_run)

    # a dry run writes nothing, so it may ask the process that owns the embedded store
    summary = _on_store(settings, "spendstream reprice --dry-run", run) if args.dry_run else _with_store(
        settings, "spendstream reprice", run, why="`spendstream reprice` writes to the store, so it opens it "
                                                   "itself: stop the worker first, or look with --dry-run")
    if not summary.examined:
        print(f"no stored events from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: nothing to re-price")
        return 0
    verb = "would change" if summary.dry_run else "changed"
    print(f"re-priced {summary.examined:,} events from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: "
          f"{verb} {summary.changed:,}\n"
          f"  total before ${summary.old_total:,.6f}\n  total after  ${summary.new_total:,.6f}\n"
          f"  difference   ${summary.delta:+,.6f}")
    if summary.changed and not summary.dry_run:
        print(f"  corrections are in cost_corrections WHERE reprice_id = '{summary.reprice_id}'")
    return 0


def _gpu_reprice(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.pricing.deployments import load_deployments
    from spendstream.sinks.gpu_prices import reprice_gpu

    if settings.deployments_file is None:
        raise UsageError("set SPENDSTREAM_DEPLOYMENTS_FILE to the deployments file whose prices should apply")
    deployments = load_deployments(settings.deployments_file)
    try:
        summary = _with_store(settings, "spendstream gpu-reprice",
                              lambda store: reprice_gpu(store, deployments, args.deployment))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"re-priced GPU cost of {', '.join(summary.deployments)}: {summary.days_changed} day(s) changed\n"
          f"  total before ${summary.old_total:,.6f}\n  total after  ${summary.new_total:,.6f}\n"
          f"  difference   ${summary.delta:+,.6f}")
    if summary.days_changed:
        print(f"  corrections are in gpu_cost_corrections WHERE reprice_id = '{summary.reprice_id}'")
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.focus import export_focus

    if args.format == "stripe":
        return _export_stripe(settings, args)
    since, until = _window(args)
    result = _on_store(settings, "spendstream export", lambda store: export_focus(
        store, since, until, args.out, billing_accounts=settings.focus_billing_accounts))
    if not result.rows:
        print(f"no priced usage from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: "
              f"wrote {result.path} with the FOCUS columns and no rows")
    else:
        print(f"wrote {result.rows:,} FOCUS rows to {result.path} (EffectiveCost ${result.effective_cost:,.6f})")
    if result.unassigned_providers:
        print(f"  BillingAccountId is unassigned:<provider> for {', '.join(result.unassigned_providers)}: set "
              "SPENDSTREAM_FOCUS_BILLING_ACCOUNTS to the account ids they bill you under")
    if result.unpriced_left_out:
        print(f"  left out {result.unpriced_left_out:,} unpriced events (no price to report; see "
              "`spendstream sql \"SELECT model, count() FROM usage_events FINAL WHERE NOT priced GROUP BY model\"`)")
    return 0


def _export_stripe(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.resale.stripe import GRAINS, stripe_meter_events
    from spendstream.resale.tables import current_book

    now = datetime.now(timezone.utc)
    step = GRAINS[args.grain]
    since = parse_when(args.since, now)
    current_start = now - (now - datetime(1970, 1, 1, tzinfo=timezone.utc)) % step  # the open period is not sent
    until = parse_when(args.until, now) if args.until else current_start

    def export(querier):
        book = current_book(querier)
        if book is None or not book[1]:
            raise UsageError("no price book with stripe.meters is loaded: `spendstream pricebook load FILE` first")
        try:
            return book[0], stripe_meter_events(querier, book[1], since=since, until=until, grain=args.grain)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc

    version, result = _on_store(settings, "spendstream export stripe", export)
    out = args.out.open("wb") if args.out else sys.stdout.buffer
    try:
        out.writelines(result.lines())
    finally:
        if args.out:
            out.close()
    moved = result.rounding_usd.normalize()
    notes = [f"{len(result.records)} meter event(s) (price book {version}); rounding revenue to cents moved "
             f"${moved:+f} in total"]
    if result.no_revenue_attempts:
        notes.append(f"{result.no_revenue_attempts:,} attempt(s) had no revenue (no price book rule, or unknown cost)")
    if result.no_customer_attempts:
        notes.append(f"{result.no_customer_attempts:,} attempt(s) without a customer were not exported")
    for customer, attempts in sorted(result.no_stripe_id.items()):
        notes.append(f"customer {customer!r} has no stripe_customer_id: {attempts:,} attempt(s) not exported")
    print("\n".join(notes), file=sys.stderr)
    return 0


def _pricebook(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.resale.pricebook import PriceBookError, load_pricebook
    from spendstream.resale.tables import store_pricebook

    path = args.file or settings.pricebook_file
    if path is None:
        raise UsageError("no price book: give FILE or set SPENDSTREAM_PRICEBOOK_FILE")
    try:
        book = load_pricebook(path)
    except PriceBookError as exc:
        raise UsageError(f"price book is invalid:\n{exc}") from exc
    _on_store(settings, "spendstream pricebook load", lambda q: store_pricebook(q, book))
    print(f"{path}: {len(book.rules)} rule(s), {len(book.customers)} customer(s), now current as {book.version}")
    return 0


def _prices(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.pricing.rates import KINDS

    at = parse_when(args.at, datetime.now(timezone.utc)) if args.at else datetime.now(timezone.utc)
    at = at.replace(second=0, microsecond=0)
    pricer = _load_pricer(settings)
    provider = args.provider if args.provider is not None else _provider_of(pricer, args.model)
    group = pricer.group_price(provider, args.model, at, args.mode, args.service_tier, args.team, args.customer)
    applied, listed = group.applied, group.listed
    print(f"{args.model} ({provider or 'provider from prefix'}) at {at:%Y-%m-%d %H:%M} UTC, mode {args.mode}"
          + (f", tier {args.service_tier}" if args.service_tier else ""))
    if not applied.priced:
        print(f"  no price: {applied.reason}")
        return 1
    print(f"  catalog entry   {applied.provider_id}/{applied.model_id}  ({pricer.catalog.name} "
          f"{pricer.catalog.version})")
    print(f"  price source    {applied.source}"
          + (f"  (overrides {pricer.overrides.path}, {pricer.overrides.version})" if group.override_id else ""))
    if applied.card is None:
        print(f"  priced by the catalog's general calculation: {applied.general}"
              + (f" × {applied.factor}" if applied.factor != 1 else ""))
        return 0
    print("  USD per million tokens" + ("   (list price)" if group.override_id and listed.card else ""))
    for kind in KINDS:
        rate, list_rate = getattr(applied.card, kind), getattr(listed.card, kind) if listed.card else None
        shown = _rate_text(rate) + (f"   ({_rate_text(list_rate)})" if group.override_id and list_rate is not None
                                     else "")
        print(f"    {kind:<15} {shown}")
    _print_fees(applied)
    return 0


def _print_fees(applied) -> None:
    """The per-call fees a price charges (tool calls, requests), if any."""
    from spendstream.pricing.fees import FEE_KINDS

    charged = [(kind, fee) for kind, fee in zip(FEE_KINDS, applied.fees, strict=True) if fee]
    if charged:
        print("  USD per call")
        for kind, fee in charged:
            print(f"    {kind:<15} {fee.normalize():f}")


def _provider_of(pricer, model: str) -> str:
    """The provider of ``model`` as `prices show` was given it: "" when a gateway prefix names it (the pricer
    reads the prefix), else the one the catalog gives the name; a usage error when none or several do."""
    from spendstream.pricing.normalize import PROVIDER_ALIASES

    head, sep, _ = model.partition("/")
    if sep and head.lower() in PROVIDER_ALIASES:
        return ""
    candidates = pricer.catalog.providers_of(model)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise UsageError(f"{model!r} is a model of several providers ({', '.join(candidates)}): pass --provider")
    raise UsageError(f"no provider in the catalog has a model {model!r}: pass --provider (it may still be priced "
                     "by an override)")


def _store_host(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.localbroker import free_port
    from spendstream.sinks import endpoint as query_endpoint
    from spendstream.sinks.host import run_store_host
    from spendstream.sinks.loopback import SECRET_FILE, ensure_secret
    from spendstream.startup import Startup, StartupError, open_migrated_store

    if not settings.embedded:
        raise UsageError("the store host serves the embedded data directory; unset SPENDSTREAM_CLICKHOUSE_URL "
                         "and SPENDSTREAM_STORE_URL")
    try:  # a worker that held the directory may still be exiting
        store = open_migrated_store(Startup(timeout_s=settings.startup_timeout_s), settings)
    except StartupError as exc:
        return _startup_failed("store", exc)
    port = settings.web_port or free_port()
    url = f"http://127.0.0.1:{port}"
    with _secret_problems_as_usage_errors():  # made before the endpoint file that tells clients where to send it
        secret = ensure_secret(settings.data_dir)
    query_endpoint.write_endpoint_file(settings.data_dir, url)
    print(f"spendstream store: serving {settings.data_dir} at {url}; start workers with "
          f"SPENDSTREAM_STORE_URL={url} and SPENDSTREAM_DATA_DIR={settings.data_dir} (its {SECRET_FILE} is the "
          "key). Ctrl-C stops.", flush=True)
    try:
        run_store_host(store, port, secret=secret)
    finally:
        query_endpoint.remove_endpoint_file(settings.data_dir)
        store.close()
    return 0


def _notify(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from spendstream.alerting.cycle import AlertCycle, AlertingConfig
    from spendstream.configfile import ConfigFileError

    try:
        config = AlertingConfig.from_settings(settings)
    except ConfigFileError as exc:
        raise UsageError(f"invalid configuration:\n{exc}") from exc
    if not config.routing.destinations:
        raise UsageError("no destinations: set SPENDSTREAM_ALERT_ROUTES to a routes file (docs/alerts.md)")
    for name, problem in config.problems().items():  # the others are still served; this one's are marked failed
        print(f"spendstream notify: destination {name!r} cannot work: {problem}", file=sys.stderr)

    def loop(store) -> int:
        # one round refreshes first (operators expect it complete); a loop refreshes beside its rounds
        cycle = AlertCycle(store, config, pass_deadline_s=args.deadline, refresh_in_background=not args.once)
        while True:
            done = cycle.run()
            report = done.delivery
            assert report is not None  # destinations are configured
            if done.raised:
                print(f"{done.raised} new alert(s)", flush=True)
            for name, error in done.detector_errors.items():
                print(f"  detector {name} failed: {error}", flush=True)
            if report.delivered:
                print(f"delivered {report.delivered} alert(s)", flush=True)
            for name, problem in report.problems.items():
                print(f"  {name}: {problem}", flush=True)
            if report.failed:
                print(f"{report.failed} delivery(ies) failed for good (see alert_deliveries)", flush=True)
            if args.once:
                if report.pending:
                    print(f"{report.pending} delivery(ies) pending: a later run retries them", flush=True)
                return 1 if done.detector_errors else report.exit_code
            time.sleep(args.interval)

    return _on_store(settings, "spendstream notify", loop)


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.reconcile import reconcile

    since, until = _window(args)
    if args.invoices:
        return _reconcile_invoices(settings, args, since, until)
    intervals = _on_store(settings, "spendstream reconcile", lambda q: reconcile(q, since, until))
    if not intervals:
        print(f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: no events emitted, stored or dead-lettered")
        return 0
    gaps = [i for i in intervals if i.gap]
    emitted, stored = sum(i.emitted for i in intervals), sum(i.stored for i in intervals)
    dead = sum(i.dead_lettered for i in intervals)
    print(f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: emitted {emitted:,}, stored {stored:,}, "
          f"dead-lettered {dead:,}, gap {emitted - stored - dead:+,} in {len(gaps)} of {len(intervals)} intervals")
    for i in intervals if args.all else gaps:
        note = "" if i.exact else "  (emitter stopped remembering ids: re-sends may count twice)"
        print(f"  {i.minute}  {i.service or '(no service)':<24} emitted {i.emitted:>8,}  stored {i.stored:>8,}  "
              f"dead {i.dead_lettered:>6,}  gap {i.gap:+,}{note}")
    return 1 if gaps else 0


def _reconcile_invoices(settings: Settings, args: argparse.Namespace, since: datetime, until: datetime) -> int:
    from spendstream.invoices.compare import compare_invoices, render

    comparison = _on_store(settings, "spendstream reconcile", lambda q: compare_invoices(
        q, since, until, tolerance_usd=args.tolerance_usd, tolerance_relative=args.tolerance_relative))
    print(f"invoices vs metered, UTC days {since:%Y-%m-%d} to {until:%Y-%m-%d} (exclusive):")
    print(render(comparison))
    return 1 if comparison.gaps else 0


def _invoices(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.invoices.formats import InvoiceFormatError, read_invoice
    from spendstream.invoices.table import import_invoice

    try:  # every file is read before any is stored: a bad one stores nothing
        parsed = [read_invoice(path) for path in args.files]
    except (OSError, InvoiceFormatError) as exc:
        raise UsageError(str(exc)) from exc
    for invoice in parsed:
        lines = _on_store(settings, "spendstream invoices import", lambda q, i=invoice: import_invoice(q, i))
        print(f"{invoice.file_name}: {lines} line(s) of {invoice.source}, ${invoice.total_usd:,.6f} "
              f"({invoice.file_digest[:19]}…; importing it again changes nothing)")
    return 0


def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream import replay as dl

    since = parse_when(args.since, datetime.now(timezone.utc))
    pricer = _load_pricer(settings)
    if not args.dry_run and not settings.kafka_bootstrap:
        raise UsageError("replay sends through Kafka: set SPENDSTREAM_KAFKA_BOOTSTRAP (the address `spendstream up` "
                         "printed, or your cluster's), or use --dry-run")

    def run(store) -> int:
        replays = dl.select(store, since=since, reason=args.reason, again=args.again, limit=args.limit)
        if not replays:
            print(f"no dead letters received since {since:%Y-%m-%d %H:%M} UTC"
                  + (f" with a reason containing {args.reason!r}" if args.reason else "")
                  + ("" if args.again else " that were not replayed before"))
            return 0
        dl.predict(replays, settings, pricer)
        if replays and not args.dry_run:
            started = datetime.now(timezone.utc)
            dl.send(replays, settings.kafka_bootstrap)
            dl.record(store, replays, now=started)
            dl.await_outcomes(store, replays, since=started, wait_s=args.wait)
        for r in replays:
            print(f"{r.where}\n    was:  {r.reason[:200]}\n    now:  {r.expected[:200]}"
                  + ("" if args.dry_run else f"\n    sent: {r.outcome[:200]}"))
        will_store = sum(not r.expected.startswith("refused") for r in replays)
        print(f"{len(replays)} dead letter(s) {'would be ' if args.dry_run else ''}replayed: {will_store} store now, "
              f"{len(replays) - will_store} still refused" + (" (dry run: nothing sent)" if args.dry_run else ""))
        return 0

    return _on_store(settings, "spendstream dead-letters replay", run)


def _advise(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from spendstream.advisor import advise

    args.since = args.since or "30d"
    since, until = _window(args)
    pricer = _load_pricer(settings)
    opportunities = _on_store(settings, "spendstream advise", lambda q: advise(q, since, until, pricer))
    if args.format == "json":
        print(json.dumps([o.as_dict() for o in opportunities], indent=2))
        return 0
    print(f"savings opportunities, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC "
          f"(monthly = the period scaled to 30 days):")
    if not opportunities:
        print("  none worth a dollar a month")
    for o in opportunities:
        print(f"\n  ${o.monthly_saving_usd:,.2f}/month  {o.kind}  {o.subject}  [{o.confidence} confidence]\n"
              f"    evidence:    {o.evidence}\n    assumptions: {o.assumptions}")
    return 0


def _on_store(settings: Settings, command: str, use):
    """``use(store)`` through the process that owns the embedded directory (a worker or `spendstream store`)
    when one runs, else on the configured store opened here."""
    from spendstream.sinks.endpoint import QueryClient
    from spendstream.sinks.host import RemoteStore

    with _secret_problems_as_usage_errors():
        client = QueryClient.for_data_dir(settings.data_dir) if settings.embedded else None
    return use(RemoteStore(client.url, client.secret)) if client is not None else _with_store(settings, command, use)


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.report import write_report

    args.since = args.since or "7d"
    since, until = _window(args)
    out = _on_store(settings, "spendstream report", lambda q: write_report(q, since, until, args.out))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB; {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC)")
    return 0


def _gpu_exporter(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import time

    from spendstream.emitter import Emitter
    from spendstream.gpu_exporter.dcgm import DcgmFilter
    from spendstream.gpu_exporter.exporter import ExporterConfig, GpuExporter

    if not settings.kafka_bootstrap:
        raise UsageError("set SPENDSTREAM_KAFKA_BOOTSTRAP to the Kafka the pipeline reads")
    config = ExporterConfig(deployment=args.deployment, urls=args.url,
                            engine=None if args.engine == "auto" else args.engine, dcgm_url=args.dcgm_url,
                            dcgm_filter=DcgmFilter(pods=tuple(args.dcgm_pod), namespace=args.dcgm_namespace,
                                                   containers=tuple(args.dcgm_container),
                                                   gpu_uuids=tuple(args.gpu_uuid)),
                            interval_s=args.interval, gpu_type=args.gpu_type, gpu_count=args.gpu_count,
                            model=args.model,
                            use_nvml=not args.no_nvml)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with Emitter(bootstrap_servers=settings.kafka_bootstrap, topic=settings.gpu_topic, max_batch_events=1,
                 delivery_timeout_s=args.delivery_timeout if args.once else 300.0) as emitter:
        exporter = GpuExporter(config, emitter.emit)
        if args.once:
            exporter.scrape_once()
            time.sleep(args.interval)
            sample = exporter.scrape_once()
            if sample is None:
                print(f"no sample: the scrape failed ({dict(exporter.dropped)})", file=sys.stderr)
                return 1
            print(sample.model_dump_json())
            # exit 0 only for a sample Kafka acknowledged: a queued one may still be lost
            if not (emitter.flush(args.delivery_timeout) and emitter.stats()["sent_events"] >= 1):
                print(f"the sample was NOT delivered to Kafka at {settings.kafka_bootstrap} within "
                      f"{args.delivery_timeout:g} s ({emitter.stats()})", file=sys.stderr)
                return 1
            return 0
        exporter.run(stop=lambda: bool(stopping))
    return 0


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.ingest.http import IngestSetupError, config_from, serve

    try:
        config = config_from(settings, host=args.host, port=args.port, insecure_no_auth=args.insecure_no_auth)
        serve(config, on_listening=lambda url: print(f"spendstream ingest: POST {url}/v1/usage → topic {config.topic} "
                                                     f"at {config.bootstrap_servers}. Ctrl-C stops.", flush=True))
    except IngestSetupError as exc:
        raise UsageError(str(exc)) from exc
    return 0


def _rate_text(rate) -> str:
    from decimal import Decimal

    if isinstance(rate, Decimal):
        return f"{rate.normalize():f}"
    tiers = ", ".join(f"above {t.start:,} input tokens {t.price.normalize():f}" for t in rate.tiers)
    return f"{rate.base.normalize():f}; {tiers}"


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.demo.run import run_demo
    from spendstream.demo.traffic import DEFAULT_SEED

    summary = run_demo(settings, limit=args.limit, seed=args.seed if args.seed is not None else DEFAULT_SEED)
    return 0 if summary.balanced else 1


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.agents.worker import run_worker
    from spendstream.startup import StartupError

    if not settings.kafka_bootstrap:
        print("spendstream worker: set SPENDSTREAM_KAFKA_BOOTSTRAP (or use `spendstream up`, "
              "which starts a local broker)", file=sys.stderr)
        return 2
    pricer = _load_pricer(settings)  # a bad overrides file stops here, before anything is consumed
    try:
        with _secret_problems_as_usage_errors():
            run_worker(settings, bootstrap_servers=settings.kafka_bootstrap, pricer=pricer)
    except StartupError as exc:
        return _startup_failed("worker", exc)
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from spendstream.agents.worker import run_worker
    from spendstream.localbroker import MEMORY_ONLY, LocalBroker
    from spendstream.startup import StartupError

    pricer = _load_pricer(settings)
    with ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap or stack.enter_context(LocalBroker()).bootstrap_servers
        if not settings.kafka_bootstrap:
            print(f"spendstream up: note: {MEMORY_ONLY}", flush=True)
        print(f"spendstream up: broker {bootstrap}, topic {settings.usage_topic}, "
              f"store {'ClickHouse server' if not settings.embedded else settings.data_dir}. "
              f"Emit with SPENDSTREAM_KAFKA_BOOTSTRAP={bootstrap}; query with `spendstream sql`. Ctrl-C stops.",
              flush=True)
        try:
            with _secret_problems_as_usage_errors():
                run_worker(settings, bootstrap_servers=bootstrap, pricer=pricer)  # creates the topics
        except StartupError as exc:
            return _startup_failed("up", exc)
        except SystemExit as exc:  # faust's worker exits through SystemExit; stop the broker first
            return int(exc.code or 0)
    return 0


def _startup_failed(command: str, exc: Exception) -> int:
    """A dependency never answered, or refused: one line that says which and why, exit status 1."""
    print(f"spendstream {command}: {exc}", file=sys.stderr)
    return 1


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    """One statement, read-only as ClickHouse enforces it unless --write; through the process that owns
    the embedded directory when one runs."""
    from spendstream.sinks import StoreError, open_store
    from spendstream.sinks.endpoint import EndpointUnavailable, QueryClient, QueryFailed
    from spendstream.sinks.loopback import SecretUnreadable

    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"spendstream sql: --param {item!r} must be NAME=VALUE", file=sys.stderr)
            return 2
        params[name] = value
    try:
        client = QueryClient.for_data_dir(settings.data_dir, write=args.write) if settings.embedded else None
        if client is not None:
            output = client.run(args.query, params, args.format)
        else:
            store = open_store(settings)
            try:
                output = store.run_statement(args.query, params, args.format, write=args.write)
            finally:
                store.close()
    except (StoreError, QueryFailed, EndpointUnavailable, SecretUnreadable) as exc:
        print(f"spendstream sql: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stdout.buffer.write(output)  # as ClickHouse wrote it: binary formats (Parquet, Arrow) too
    sys.stdout.buffer.flush()
    if not output and args.format.startswith("Pretty"):  # ClickHouse draws no table for no rows
        print("(no rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
