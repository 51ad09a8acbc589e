"""The maintainer's own lag: an event written → counted in ``usage_minutes``, with no broker in the way.

    PYTHONPATH=<checkout> .venv/bin/python bench/maintainer_lag.py [--rate 20000] [--seconds 60]

In one process, on a fresh embedded store, two threads share it as a worker's writer and its
leader timer do (one chdb session, one statement at a time): the writer, every
``--batch-every-s`` (the worker's ``batch_max_wait_s``), prices and writes the events of
that interval (``ts`` = when each was made, spread evenly) through the worker's ``SinkWriter``;
the maintainer runs a pass every ``--interval-s`` (the worker's ``rollup_interval_s``) with the
worker's defaults and, right after it, reads ``sum(attempts)`` per minute. The k-th event of
minute M is counted at the end of the first pass after which M holds at least k attempts;
lag = that time - its ``ts`` (and, apart, - when its batch was durable: the maintainer alone).
Everything before the store (emitter, broker, consumer) is left out: bench/rollup_lag.py
measures end to end. Run it for two checkouts back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))

from throughput import percentile  # noqa: E402
from workload import base_events  # noqa: E402

import spendstream  # noqa: E402
from spendstream.agents.stages import process  # noqa: E402
from spendstream.batches import BatchResult, SourceRecord  # noqa: E402
from spendstream.pricing import Pricer  # noqa: E402
from spendstream.sinks import rollups  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402
from spendstream.sinks.writer import SinkWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=20_000, help="events per second written")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch-every-s", type=float, default=0.5)
    parser.add_argument("--interval-s", type=float, default=1.0)
    args = parser.parse_args()
    base = [e.model_dump(mode="json") for e in base_events(int(args.rate * args.batch_every_s))]
    pricer = Pricer()
    result: dict[str, object] = {"code": str(Path(spendstream.__file__).parent.parent),
                                 "load_average_1m_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "data")
        migrate(store)
        result |= measure(store, SinkWriter(store), pricer, base, args)
        store.close()
    result["load_average_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result))


def measure(store, writer: SinkWriter, pricer: Pricer, base: list[dict], args: argparse.Namespace) -> dict:
    written: dict[str, list[tuple[float, float]]] = {}  # minute -> (ts, when durable) of its events, in order
    seen: dict[str, list[tuple[float, int]]] = {}  # minute -> (pass end, attempts) where the count grew
    lock = threading.Lock()
    writing_done = threading.Event()
    pass_s: list[float] = []
    write_s: list[float] = []
    late_batches = 0

    per_batch = int(args.rate * args.batch_every_s)
    template = process([SourceRecord("usage", 0, k, orjson.dumps(base[i:i + 1000]))
                        for k, i in enumerate(range(0, per_batch, 1000))], pricer)
    assert template.num_events == per_batch, "the template batch must keep every event"

    def write() -> None:
        nonlocal late_batches
        try:
            started, n, batch = time.time(), 0, 0
            while batch * args.batch_every_s < args.seconds:
                batch += 1
                due = started + batch * args.batch_every_s
                # the events made during the interval ending at `due`, evenly spread over it: the template batch with
                # fresh ids and times (pricing them again would cost this harness more than the writer it drives)
                times = [due - args.batch_every_s + args.batch_every_s * (i + 1) / per_batch for i in range(per_batch)]
                processed = _fresh(template, n, times)
                n += per_batch
                if time.time() < due:
                    time.sleep(due - time.time())
                else:
                    late_batches += 1
                began = time.perf_counter()
                asyncio.run(writer.write(processed))
                write_s.append(time.perf_counter() - began)
                durable = time.time()
                with lock:
                    for t in times:
                        written.setdefault(datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:00"),
                                           []).append((t, durable))
        finally:  # (a failed write ends the run rather than leaving the passes waiting)
            writing_done.set()

    def complete() -> bool:
        with lock:
            return all(seen.get(m) and seen[m][-1][1] >= len(ts) for m, ts in written.items())

    writer_thread = threading.Thread(target=write, daemon=True)
    writer_thread.start()
    next_pass = time.time()
    deadline = time.time() + args.seconds + 300
    while time.time() < deadline and not (writing_done.is_set() and complete()):
        next_pass += args.interval_s
        if time.time() < next_pass:
            time.sleep(next_pass - time.time())
        began = time.perf_counter()
        rollups.maintain(store, now=datetime.now(timezone.utc))
        pass_s.append(time.perf_counter() - began)
        since = datetime.now(timezone.utc) - timedelta(minutes=30)
        rows = store.query("SELECT toString(minute), sum(attempts) FROM usage_minutes FINAL "
                           f"WHERE minute >= '{since:%Y-%m-%d %H:%M:%S}' GROUP BY minute").rows
        at = time.time()
        with lock:
            for minute, count in rows:
                history = seen.setdefault(str(minute), [])
                if not history or int(count) > history[-1][1]:
                    history.append((at, int(count)))
    writer_thread.join()
    lags, after_durable = [], []
    for minute, times in written.items():
        history = seen.get(minute, [])
        for k, (t, durable) in enumerate(times, start=1):
            visible = next((at for at, count in history if count >= k), None)
            if visible is not None:
                lags.append(visible - t)
                after_durable.append(visible - durable)
    total = sum(len(t) for t in written.values())
    return {"events": total, "counted": len(lags), "late_batches": late_batches,
            "p50_s": percentile(lags, 0.5), "p99_s": percentile(lags, 0.99), "max_s": max(lags),
            "durable_to_visible_p50_s": percentile(after_durable, 0.5),
            "durable_to_visible_p99_s": percentile(after_durable, 0.99),
            "passes": len(pass_s), "pass_p50_s": percentile(pass_s, 0.5), "pass_max_s": max(pass_s),
            "write_p50_s": percentile(write_s, 0.5), "write_p99_s": percentile(write_s, 0.99)}


def _fresh(template: BatchResult, first: int, times: list[float]) -> BatchResult:
    """``template`` with event ids ``first``… (requests as many) and these timestamps."""
    events = template.events
    assert events is not None
    ids = [f"ml-{first + i}" for i in range(len(times))]
    millis = pa.array([int(t * 1000) for t in times], pa.int64())
    for name, values in (("event_id", pa.array(ids)), ("request_id", pa.array([f"q{i}" for i in ids])),
                         ("ts", millis)):
        at = events.schema.get_field_index(name)
        field = events.schema.field(at)
        events = events.set_column(at, field, values.cast(field.type))
    return dataclasses.replace(template, events=events)


if __name__ == "__main__":
    main()
