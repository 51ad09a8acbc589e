"""``spendstream demo``: broker + worker, replay the trace through the emitter, show the bill."""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spendstream.demo.traffic import DEFAULT_SEED, generate, gpu_samples, load_trace
from spendstream.demo.worker_process import WorkerProcess
from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import MEMORY_ONLY, LocalBroker
from spendstream.report import write_report
from spendstream.settings import Settings
from spendstream.sinks.store import QueryResult, TextQuerier, query_result

# Every demo query is scoped to this run's event ids, so earlier runs in the
# same data directory do not change the count check.
RUN_FILTER = "startsWith(event_id, {run:String})"


@dataclass(frozen=True, slots=True)
class DemoSummary:
    run_id: str
    start: datetime
    emitted: int
    stored: int
    dead_lettered: int
    unpriced: int
    total_cost: Decimal
    emitter_stats: dict[str, int]

    @property
    def balanced(self) -> bool:
        return self.emitted == self.stored + self.dead_lettered


def run_demo(settings: Settings, *, limit: int | None = None, seed: int = DEFAULT_SEED,
             console: Console | None = None, wait_timeout_s: float = 300.0) -> DemoSummary:
    console = console or Console(width=None if Console().is_terminal else 120)
    run_id = f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    rows = load_trace(limit)
    # Shift the trace so it ends now: the demo's spend is "the last hour".
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=rows[-1].offset_s + 1)
    events = generate(rows, run_id=run_id, start=start, seed=seed)
    samples = gpu_samples(events, start=start, end=start + timedelta(seconds=rows[-1].offset_s), run_id=run_id)
    if settings.deployments_file is None:  # the demo's self-hosted deployment, unless you configured yours
        bundled = resources.files("spendstream.data").joinpath("demo_deployments.yaml")
        settings = settings.model_copy(update={"deployments_file": Path(str(bundled))})

    with ExitStack() as stack:
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
        else:
            with console.status("starting the local broker (tansu)…"):
                bootstrap = stack.enter_context(LocalBroker()).start()
            console.print(f"[dim]note: {MEMORY_ONLY}[/]", highlight=False)
        ensure_topics(bootstrap, {settings.usage_topic: settings.topic_partitions, settings.gpu_topic: 1,
                                  settings.ledger_topic: 1})
        worker = WorkerProcess(settings, bootstrap_servers=bootstrap,
                               log_path=settings.data_dir / "logs" / f"{run_id}-worker.log")
        with console.status("starting the worker (migrating the schema)…"):
            stack.enter_context(worker)
        querier = _querier(settings, worker, stack)
        console.print(f"[bold]spendstream demo[/] run [cyan]{run_id}[/]: {len(rows):,} trace requests → "
                      f"{len(events):,} events, broker {bootstrap}, data in {settings.data_dir}")

        with Emitter(bootstrap_servers=bootstrap, topic=settings.usage_topic, ledger_topic=settings.ledger_topic,
                     max_queue_events=len(events) + 1, register_atexit=False) as emitter:
            with _progress(console) as progress:
                task = progress.add_task("emitting", total=len(events))
                for n, event in enumerate(events, 1):
                    emitter.emit(event)
                    if n % 1000 == 0:
                        progress.update(task, completed=n)
                progress.update(task, completed=len(events))
                emitter.flush(120)
            stats = emitter.stats()
        with Emitter(bootstrap_servers=bootstrap, topic=settings.gpu_topic, register_atexit=False) as gpu_emitter:
            for sample in samples:
                gpu_emitter.emit(sample)
        emitted = stats["sent_events"]

        params = {"run": run_id}
        with _progress(console) as progress:
            task = progress.add_task("stored in ClickHouse", total=emitted)
            deadline = time.monotonic() + wait_timeout_s
            while True:
                stored, dead = _counts(querier, params)
                progress.update(task, completed=stored + dead)
                if stored + dead >= emitted or time.monotonic() > deadline:
                    break
                time.sleep(0.5)

        totals = query_result(querier, f"SELECT countIf(NOT priced), sum(total_cost) FROM usage_events FINAL "
                                       f"WHERE {RUN_FILTER}", params).rows[0]
        _print_tables(console, querier, params)
        summary = DemoSummary(run_id, start, emitted, stored, dead, int(totals[0]),
                              Decimal(totals[1] or 0), stats)
        _print_summary(console, summary)
        _wait_for_gpu_samples(querier, len(samples), run_id)
        report = write_report(querier, start - timedelta(minutes=1), datetime.now(timezone.utc) + timedelta(minutes=1),
                              settings.data_dir / "report.html")
        console.print(f"report: [bold]{report}[/] (one self-contained HTML file; open it in a browser)")
        return summary


def _wait_for_gpu_samples(querier: TextQuerier, expected: int, run_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stored = query_result(querier, "SELECT count() FROM gpu_samples FINAL WHERE startsWith(sample_id, {r:String})",
                              {"r": run_id}).scalar()
        if int(stored) >= expected:
            return
        time.sleep(0.3)


def _querier(settings: Settings, worker: WorkerProcess, stack: ExitStack) -> TextQuerier:
    if settings.embedded:
        return worker.query_client()
    from spendstream.sinks import open_store

    store = open_store(settings)
    stack.callback(store.close)
    return store


def _counts(querier: TextQuerier, params: dict[str, str]) -> tuple[int, int]:
    row = query_result(querier, f"SELECT (SELECT count() FROM usage_events FINAL WHERE {RUN_FILTER}), "
                                f"(SELECT count() FROM dead_letters FINAL WHERE {RUN_FILTER})", params).rows[0]
    return int(row[0]), int(row[1])


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _print_tables(console: Console, querier: TextQuerier, params: dict[str, str]) -> None:
    for dimension in ("team", "feature", "model"):
        result = query_result(querier, f"""
            SELECT {dimension}, count() AS events, countIf(status != 'ok') AS failed,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                   countIf(NOT priced) AS unpriced, sum(total_cost) AS cost_usd
            FROM usage_events FINAL WHERE {RUN_FILTER}
            GROUP BY {dimension} ORDER BY cost_usd DESC, {dimension}""", params)
        console.print(_rich_table(f"Cost by {dimension}", result))


def _rich_table(title: str, result: QueryResult) -> Table:
    table = Table(title=title, title_justify="left")
    for column, ch_type in zip(result.columns, result.types, strict=True):
        table.add_column(column, justify="left" if "String" in ch_type else "right")
    for row in result.rows:
        table.add_row(*(_cell(v) for v in row))
    return table


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, Decimal):
        return f"${value.quantize(Decimal('0.0001')):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _print_summary(console: Console, s: DemoSummary) -> None:
    style = "green" if s.balanced else "red"
    console.print(f"[{style}]emitted {s.emitted:,}, stored {s.stored:,}, dead-lettered {s.dead_lettered:,}[/]"
                  f"  (unpriced, stored and flagged: {s.unpriced:,}; total ${s.total_cost:,.6f})")
    dropped = {k: v for k, v in s.emitter_stats.items() if k.startswith("dropped_") and v}
    if dropped:
        console.print(f"[red]emitter dropped: {dropped}[/]")
    if not s.balanced:
        console.print(f"[red]count check failed: {s.emitted - s.stored - s.dead_lettered:,} events not accounted "
                      f"for; see the worker log in the data directory's logs/ folder[/]")
