"""Rollup lag: an event emitted → counted in ``usage_minutes``, at a fixed offered rate.

    .venv/bin/python bench/rollup_lag.py [--rate 20000] [--seconds 60]

One local tansu broker, one worker (which runs the rollup maintainer as its faust
leader timer, every SPENDSTREAM_ROLLUP_INTERVAL_S), events emitted live in 10 ms ticks
with ``ts`` = emit time. A poller reads ``sum(attempts)`` per minute from
``usage_minutes FINAL`` every 100 ms; the k-th event emitted in minute M is counted at
the first poll that sees at least k attempts in M. Lag = that time - its emit time.

``--split`` also polls the raw rows (``count()`` per minute of ``usage_events``, no
``FINAL``: the ids are fresh) and reports the lag to *stored* apart: what the emitter,
broker, consumer and writer take before the maintainer sees an event. The extra poll
costs the store a query every 100 ms, so compare runs with the same flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from throughput import PARTITIONS, percentile, settings_for  # noqa: E402
from workload import base_events, replay  # noqa: E402

from spendstream.demo.worker_process import WorkerProcess  # noqa: E402
from spendstream.emitter import Emitter  # noqa: E402
from spendstream.kafka_admin import ensure_topics  # noqa: E402
from spendstream.localbroker import LocalBroker  # noqa: E402
from spendstream.sinks.store import query_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--split", action="store_true", help="also time emitted -> stored in raw")
    args = parser.parse_args()
    base = base_events(20_000)
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        bootstrap = broker.start()
        topic = "bench.rollup-lag"
        ensure_topics(bootstrap, {topic: PARTITIONS})
        with WorkerProcess(settings_for(Path(tmp), topic, "lag"), bootstrap_servers=bootstrap,
                           log_path=Path(tmp) / "worker.log") as worker:
            result = measure(worker.query_client(), bootstrap, topic, base, args.rate, args.seconds,
                             split=args.split)
    print(json.dumps(result))


def measure(client, bootstrap: str, topic: str, base: list, rate: int, seconds: float, *,
            split: bool = False) -> dict:
    emitted: dict[str, list[float]] = {}   # minute -> emit times of its events, in order
    seen: dict[str, list[float]] = {}      # minute -> (time, count) polls where the count grew
    stored: dict[str, list[float]] = {}    # the same, of raw rows (--split)
    lock = threading.Lock()
    done = threading.Event()
    lost = [0]  # events the emitter dropped, once it is closed

    def poll() -> None:
        while True:
            rows = query_result(client, "SELECT toString(minute), sum(attempts) FROM usage_minutes FINAL "
                                        "WHERE minute >= now() - INTERVAL 30 MINUTE GROUP BY minute").rows
            now = time.time()
            raw = query_result(client, "SELECT toString(toStartOfMinute(toDateTime(ts))), count() FROM usage_events "
                                       "WHERE ts >= now() - INTERVAL 30 MINUTE AND startsWith(event_id, 'lag-') "
                                       "GROUP BY 1").rows if split else []
            raw_at = time.time()
            with lock:
                for polled, at, into in ((rows, now, seen), (raw, raw_at, stored)):
                    for minute, count in polled:
                        history = into.setdefault(minute, [])
                        if not history or int(count) > history[-1][1]:
                            history.append((at, int(count)))
                # every event the emitter did not drop is counted (a dropped one never arrives: waiting for
                # it cost every run that dropped any the poller's whole timeout)
                complete = sum(h[-1][1] for h in seen.values() if h) >= sum(map(len, emitted.values())) - lost[0]
            if done.is_set() and complete:
                return
            time.sleep(0.1)

    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, ledger_topic=None, register_atexit=False)
    # Warm up: the worker has joined its groups, faust has elected it leader, and the maintainer has run.
    emitter.emit(next(replay(base, 1, run="warm")).model_copy(update={"ts": datetime.now(timezone.utc)}))
    emitter.flush(30)
    while not query_result(client, "SELECT count() FROM usage_minutes").scalar():
        time.sleep(0.1)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    per_tick = max(rate // 100, 1)
    started = time.perf_counter()
    for tick in range(int(seconds * 100)):
        while time.perf_counter() < started + tick / 100:
            time.sleep(0.0005)
        now = datetime.now(timezone.utc)
        minute = now.strftime("%Y-%m-%d %H:%M:00")
        # one copy an event (fresh ids and ts together): at 20,000/s the harness's own cost decides
        # whether the rate is offered at all on a busy 2-core machine
        for i in range(tick * per_tick, (tick + 1) * per_tick):
            emitter.emit(base[i % len(base)].model_copy(
                update={"event_id": f"lag-{i}", "request_id": f"lag-q{i}", "ts": now}))
        with lock:
            emitted.setdefault(minute, []).extend([now.timestamp()] * per_tick)
    offered_s = time.perf_counter() - started
    emitter.close(120)
    # events the emitter dropped (its queue full: the harness outran its own sender) never arrive
    dropped = sum(v for k, v in emitter.stats().items() if k.startswith("dropped_"))
    lost[0] = dropped
    done.set()
    poller.join(300)
    lags = _lags(emitted, seen)
    total = sum(len(t) for t in emitted.values())
    return {"load_average_1m": os.getloadavg()[0], "offered_per_s": total / offered_s, "events": total,
            "dropped_by_emitter": dropped, "counted": len(lags),
            "p50_s": statistics.median(lags), "p99_s": percentile(lags, 0.99), "max_s": max(lags)} | (
        {"stored_p50_s": statistics.median(s), "stored_p99_s": percentile(s, 0.99)}
        if split and (s := _lags(emitted, stored)) else {})


def _lags(emitted: dict[str, list[float]], seen: dict[str, list]) -> list[float]:
    """Per event: the first poll that counted it in its minute, minus its emit time."""
    lags = []
    for minute, times in emitted.items():
        history = seen.get(minute, [])
        for k, at in enumerate(times, start=1):
            visible = next((t for t, count in history if count >= k), None)
            if visible is not None:
                lags.append(visible - at)
    return lags


if __name__ == "__main__":
    main()
