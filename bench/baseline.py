"""Baseline of the walking skeleton: emit() cost in the host thread, and end-to-end events/s.

    .venv/bin/python bench/baseline.py [--events 100000]

Starts a local tansu broker and one worker process (embedded chdb in a temp dir),
emits generated events from the bundled trace, and times until all are queryable.
Results go in BENCHMARKS.md by hand, with the machine described.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from spendstream.demo.traffic import generate, load_trace
from spendstream.demo.worker_process import WorkerProcess
from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import LocalBroker
from spendstream.settings import Settings
from spendstream.sinks.store import query_result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()

    rows = load_trace()
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    events = []
    rounds = 0
    while len(events) < args.events:
        events += [e for e in generate(rows, run_id=f"bench{rounds}", start=start, seed=rounds)
                   if not isinstance(e, dict)]
        rounds += 1
    events = events[: args.events]

    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        settings = Settings(data_dir=Path(tmp) / "data", usage_topic="bench.usage", consumer_group="bench")
        ensure_topics(broker.bootstrap_servers, {settings.usage_topic: settings.topic_partitions})
        with WorkerProcess(settings, bootstrap_servers=broker.bootstrap_servers, log_path=Path(tmp) / "w.log") as w:
            client = w.query_client()
            with Emitter(bootstrap_servers=broker.bootstrap_servers, topic=settings.usage_topic,
                         max_queue_events=len(events) + 1, register_atexit=False) as emitter:
                costs = []
                t0 = time.perf_counter()
                for event in events:
                    before = time.perf_counter_ns()
                    emitter.emit(event)
                    costs.append((time.perf_counter_ns() - before) / 1000)
                emit_s = time.perf_counter() - t0
                emitter.flush(300)
                sent_s = time.perf_counter() - t0
            while True:
                stored = int(query_result(client, "SELECT count() FROM usage_events").scalar())
                if stored >= len(events):
                    break
                time.sleep(0.2)
            total_s = time.perf_counter() - t0

    print(f"events: {len(events):,}")
    print(f"emit() in the host thread: p50 {statistics.median(costs):.2f} µs, p99 {percentile(costs, 0.99):.2f} µs "
          f"(all emits took {emit_s:.2f} s)")
    print(f"emitter delivered to the broker after {sent_s:.2f} s ({len(events) / sent_s:,.0f} events/s)")
    print(f"all queryable in ClickHouse after {total_s:.2f} s: {len(events) / total_s:,.0f} events/s end to end")


if __name__ == "__main__":
    main()
