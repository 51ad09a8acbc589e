"""The crash harness: kill -9 workers under load and prove no total changes.

One ``spendstream store`` process owns the embedded ClickHouse; each run starts a
fresh tansu broker (so the broker is restarted between runs) and two worker
processes in one consumer group. An emitter thread drives a steady load of
events generated from the bundled trace and sends a share of them twice. Every
``cycle`` a random worker is killed with SIGKILL and started again, which forces
rebalances with uncommitted batches in flight. At the end ClickHouse must hold
exactly the distinct events that were emitted, and every total — overall, per
team, per day, in the views — must equal the ground truth computed from them.

    .venv/bin/python bench/crash_harness.py --runs 2 --cycles 20
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from spendstream.demo.traffic import generate, load_trace
from spendstream.demo.worker_process import StoreHostProcess, WorkerProcess
from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import LocalBroker
from spendstream.pricing import Pricer, UsageColumns
from spendstream.schemas import UsageEvent
from spendstream.settings import Settings
from spendstream.sinks import rollups


@dataclass
class HarnessResult:
    runs: int
    kills: int
    emitted_sends: int = 0
    emitted_distinct: int = 0
    duplicates_sent: int = 0
    conflicts_sent: int = 0
    conflicts_recorded: int = 0
    first_sent_stood: int = 0
    stored_distinct: int = 0
    stored_rows_before_merge: int = 0
    stored_rows_after_merge: int = 0
    expected_total: Decimal = Decimal(0)
    stored_total: Decimal = Decimal(0)
    expected_by_team: dict[str, Decimal] = field(default_factory=dict)
    stored_by_team: dict[str, Decimal] = field(default_factory=dict)
    stored_by_team_view: dict[str, Decimal] = field(default_factory=dict)
    stored_by_team_rollup: dict[str, Decimal] = field(default_factory=dict)  # usage_minutes, as maintained
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return (self.stored_distinct == self.emitted_distinct == self.stored_rows_after_merge
                and self.stored_total == self.expected_total
                and self.stored_by_team == self.expected_by_team == self.stored_by_team_view
                == self.stored_by_team_rollup
                and self.conflicts_recorded == self.conflicts_sent)

    def lines(self) -> list[str]:
        return [
            f"runs {self.runs} (a fresh broker each), kill -9 cycles {self.kills}, {self.seconds:.0f} s",
            f"sent {self.emitted_sends:,} events ({self.duplicates_sent:,} of them a second time): "
            f"{self.emitted_distinct:,} distinct",
            f"stored distinct {self.stored_distinct:,} (rows without FINAL {self.stored_rows_before_merge:,}, "
            f"with FINAL {self.stored_rows_after_merge:,})",
            f"conflicting re-sends {self.conflicts_sent:,} (same id, other content): recorded "
            f"{self.conflicts_recorded:,}, none applied over a stored copy; the copy sent first stood for "
            f"{self.first_sent_stood:,}",
            f"total cost: expected ${self.expected_total}, stored ${self.stored_total}",
            f"per team equal to ground truth (table, cost_daily view, usage_minutes rollup): "
            f"{self.stored_by_team == self.expected_by_team == self.stored_by_team_view == self.stored_by_team_rollup}",
            "RESULT: " + ("exact — no loss, no double count" if self.exact else "MISMATCH"),
        ]


def run_harness(*, runs: int = 2, cycles: int = 20, rate: float = 1_000.0, duplicate_share: float = 0.05,
                conflict_share: float = 0.01, seed: int = 1, workdir: Path | None = None,
                log: Callable[[str], None] = print) -> HarnessResult:
    started = time.monotonic()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        prefix = f"crash-{datetime.now(timezone.utc):%H%M%S}-{rng.randrange(16**6):06x}"
        distinct: dict[str, UsageEvent] = {}
        conflicting: dict[str, UsageEvent] = {}
        result = HarnessResult(runs=runs, kills=0)
        with StoreHostProcess(root / "data", log_path=root / "store.log") as host:
            for run in range(runs):
                with LocalBroker() as broker:
                    bootstrap = broker.start()
                    settings = Settings(data_dir=root / "data", store_url=host.url, usage_topic=f"{prefix}.{run}",
                                        gpu_topic=f"{prefix}.{run}.gpu", consumer_group=f"{prefix}-{run}",
                                        topic_partitions=4, batch_max_wait_s=0.2)
                    ensure_topics(bootstrap, {settings.usage_topic: 4, settings.gpu_topic: 1})
                    workers = [WorkerProcess(settings, bootstrap_servers=bootstrap,
                                             log_path=root / f"worker-{run}-{n}.log") for n in range(2)]
                    for worker in workers:
                        worker.start()
                    load = _Load(bootstrap, settings.usage_topic, f"{prefix}-r{run}", rate, duplicate_share,
                                 conflict_share, rng.randrange(2**31))
                    load.start()
                    for cycle in range(cycles):
                        time.sleep(rng.uniform(1.5, 3.5))
                        victim = rng.randrange(len(workers))
                        workers[victim].kill()
                        workers[victim].start()
                        result.kills += 1
                        log(f"run {run + 1}/{runs}, cycle {cycle + 1}/{cycles}: killed worker {victim} (kill -9) "
                            f"and started it again; {load.sent:,} sends so far")
                    load.stop()
                    result.emitted_sends += load.sent
                    result.duplicates_sent += load.duplicates
                    distinct.update(load.distinct)
                    conflicting.update(load.conflicting)
                    _wait_for(host, f"{prefix}-r{run}", len(load.distinct), log)
                    for worker in workers:
                        worker.stop()
            _check(host, prefix, distinct, conflicting, result)
    result.seconds = time.monotonic() - started
    return result


class _Load:
    """Emits trace-generated events at ``rate`` per second from a thread; some are sent twice.

    A share of events is sent again a few seconds later with other content under the
    same id (a sender re-using ids): which copy is stored first is up to the workers
    and their crashes; the other copy must be recorded as a conflict, never applied.
    """

    def __init__(self, bootstrap: str, topic: str, run_id: str, rate: float, duplicate_share: float,
                 conflict_share: float, seed: int):
        rows = load_trace()
        start = datetime.now(timezone.utc) - timedelta(hours=1)
        self._events = [e for e in generate(rows, run_id=run_id, start=start, seed=seed) if isinstance(e, UsageEvent)]
        self._emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, max_batch_events=200,
                                flush_interval_s=0.1, delivery_timeout_s=300, register_atexit=False)
        self._rate, self._share, self._rng = rate, duplicate_share, random.Random(seed)
        self._conflict_share = conflict_share
        self._later: list[tuple[float, UsageEvent]] = []  # conflicting copies, sent a few seconds on
        self.conflicting: dict[str, UsageEvent] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.distinct: dict[str, UsageEvent] = {}
        self.sent = self.duplicates = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        assert self._emitter.flush(120), "the emitter could not deliver what it sent"
        stats = self._emitter.stats()
        self._emitter.close()
        dropped = {k: v for k, v in stats.items() if k.startswith("dropped_") and v}
        assert not dropped, f"the emitter dropped events: {dropped}"

    def _run(self) -> None:
        began, n = time.monotonic(), 0
        for event in self._events:
            if self._stop.is_set():
                return
            self._emitter.emit(event)
            self.distinct[event.event_id] = event
            self.sent += 1
            if self._rng.random() < self._share:  # the emitter's retry, or a service sending twice
                self._emitter.emit(event)
                self.sent += 1
                self.duplicates += 1
            if self._rng.random() < self._conflict_share:
                forged = event.model_copy(update={"output_tokens": event.output_tokens + 1_000})
                self._later.append((time.monotonic() + self._rng.uniform(1, 5), forged))
            while self._later and self._later[0][0] <= time.monotonic():
                forged = self._later.pop(0)[1]
                self._emitter.emit(forged)
                self.conflicting[forged.event_id] = forged
                self.sent += 1
            n += 1
            ahead = n / self._rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)


def _wait_for(host: StoreHostProcess, run_prefix: str, expected: int, log: Callable[[str], None],
              timeout_s: float = 300) -> None:
    store = host.remote_store()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stored = int(store.query("SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, {p:String})",
                                 {"p": run_prefix}).scalar())
        if stored >= expected:
            return
        time.sleep(1)
    log(f"timed out waiting: {stored:,} of {expected:,} stored")


def _check(host: StoreHostProcess, prefix: str, distinct: dict[str, UsageEvent],
           conflicting: dict[str, UsageEvent], result: HarnessResult) -> None:
    store = host.remote_store()
    p = {"p": prefix}
    # Of two conflicting copies, the one stored first stands: which, the stored row says (by its tokens).
    stood = {r[0]: int(r[1]) for r in store.query(
        "SELECT event_id, output_tokens FROM usage_events FINAL WHERE startsWith(event_id, {p:String})", p).rows
        if r[0] in conflicting}
    chosen = dict(distinct)
    for event_id, forged in conflicting.items():
        if stood.get(event_id) == forged.output_tokens:
            chosen[event_id] = forged
        else:
            result.first_sent_stood += 1
    result.conflicts_sent = len(conflicting)
    result.conflicts_recorded = int(store.query(
        "SELECT uniqExact(event_id) FROM event_conflicts FINAL WHERE startsWith(event_id, {p:String})", p).scalar())
    events = list(chosen.values())
    priced = Pricer().price_columns(UsageColumns.from_events(events))
    by_team: dict[str, Decimal] = defaultdict(Decimal)
    for event, cost in zip(events, priced.total_cost.to_pylist(), strict=True):
        if cost is not None:
            result.expected_total += cost
            by_team[event.team or ""] += cost
    result.expected_by_team = dict(by_team)
    result.emitted_distinct = len(distinct)
    result.stored_distinct = int(store.query(
        "SELECT uniqExact(event_id) FROM usage_events FINAL WHERE startsWith(event_id, {p:String})", p).scalar())
    result.stored_rows_before_merge = int(store.query(
        "SELECT count() FROM usage_events WHERE startsWith(event_id, {p:String})", p).scalar())
    result.stored_rows_after_merge = int(store.query(
        "SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, {p:String})", p).scalar())
    result.stored_total = store.query("SELECT sum(total_cost) FROM usage_events FINAL "
                                      "WHERE startsWith(event_id, {p:String})", p).scalar() or Decimal(0)
    result.stored_by_team = {r[0] or "": r[1] for r in store.query(
        "SELECT team, sum(total_cost) FROM usage_events FINAL WHERE startsWith(event_id, {p:String}) AND priced "
        "GROUP BY team", p).rows}
    # the harness's data directory holds only its own runs, so the view's totals are theirs
    result.stored_by_team_view = {r[0] or "": r[1] for r in store.query(
        "SELECT team, sum(cost_usd) FROM cost_daily GROUP BY team HAVING sum(cost_usd) > 0").rows}
    # The rollup itself, once the maintainer has caught up with whatever the killed leaders left pending, with
    # the worker's own cadence (a minute still live is summed from its slices, a quiet one recomputed from raw):
    # what a reader of usage_minutes sees, so a crash can cost it time but never a row.
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=1_000_000)
    result.stored_by_team_rollup = {r[0] or "": r[1] for r in store.query(
        "SELECT team, sum(cost_usd) FROM usage_minutes FINAL GROUP BY team HAVING sum(cost_usd) > 0").rows}
