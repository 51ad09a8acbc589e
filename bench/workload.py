"""The events every throughput run replays: the bundled Azure trace, scaled up, seeded.

The trace gives real arrival order and token counts; attribution, models and
failures are generated on top by :mod:`spendstream.demo.traffic` (seeded). A base
of distinct trace events is replayed ``copies`` times with fresh ids, each copy a
minute later, so a run of millions keeps realistic sizes and attribution.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from spendstream.demo.traffic import generate, load_trace
from spendstream.emitter import Emitter
from spendstream.schemas import UsageEvent


def base_events(n: int, *, start: datetime | None = None) -> list[UsageEvent]:
    """``n`` well-formed events replayed from the trace (malformed demo events are left out)."""
    rows = load_trace()
    start = start or datetime.now(timezone.utc) - timedelta(hours=2)
    events: list[UsageEvent] = []
    rounds = 0
    while len(events) < n:
        events += [e for e in generate(rows, run_id=f"w{rounds}", start=start, seed=rounds)
                   if isinstance(e, UsageEvent)]
        rounds += 1
    return events[:n]


def replay(base: list[UsageEvent], total: int, *, first: int = 0, step: int = 1, customers: int | None = None,
           tag_values: int | None = None, run: str = "r") -> Iterator[UsageEvent]:
    """Events ``first``, ``first + step``, … below ``total``: copies of ``base`` with fresh ids.

    ``customers`` / ``tag_values`` spread the events over that many distinct customer
    ids / values of the free tag ``route`` (for the state-size runs).
    """
    for i in range(first, total, step):
        event = base[i % len(base)]
        copy = i // len(base)
        update: dict[str, object] = {"event_id": f"{run}-{i}", "request_id": f"{run}-q{i}",
                                     "ts": event.ts + timedelta(minutes=copy)}
        if customers:
            update["customer"] = f"cust-{i % customers}"
        if tag_values:
            update["tags"] = {"route": f"/r/{i % tag_values}"}
        yield event.model_copy(update=update)


def _emit_share(bootstrap: str, topic: str, base: list[UsageEvent], total: int, first: int, step: int,
                options: dict) -> None:
    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, max_queue_events=200_000, ledger_topic=None,
                      register_atexit=False)
    for n, event in enumerate(replay(base, total, first=first, step=step, **options)):
        emitter.emit(event)
        while n % 10_000 == 0:  # stay well under the queue bound: the sender is slower than this loop
            stats = emitter.stats()
            if stats["enqueued"] - stats["sent_events"] <= 100_000:
                break
            time.sleep(0.01)
    emitter.close(600)
    stats = emitter.stats()
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    if dropped:
        raise SystemExit(f"emitter dropped {dropped} events: {stats}")


def preload(bootstrap: str, topic: str, base: list[UsageEvent], total: int, *, processes: int = 2,
            **options: object) -> float:
    """Emit ``total`` events into ``topic`` through the Emitter from ``processes`` processes; seconds taken."""
    started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_emit_share, args=(bootstrap, topic, base, total, k, processes, options))
               for k in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a preload process failed with exit code {worker.exitcode}")
    return time.perf_counter() - started
