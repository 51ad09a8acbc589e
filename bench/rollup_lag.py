"""Rollup lag: an event emitted → counted in ``usage_minutes``, at a fixed offered rate, split by stage.

    .venv/bin/python bench/rollup_lag.py [--rate 20000] [--seconds 60]

One local tansu broker, one worker (which runs the rollup maintainer as its faust
leader timer, every SPENDSTREAM_ROLLUP_INTERVAL_S), events emitted live in 10 ms ticks
with ``ts`` = emit time by a **process of its own** (its own GIL: the harness's emitting
does not starve the poller, nor the other way round). That process also samples its
emitter's ``sent_events`` (what Kafka acknowledged) every 10 ms. A poller here reads
``sum(attempts)`` per minute from ``usage_minutes FINAL`` and ``count()`` per minute of
the raw rows (no ``FINAL``: the ids are fresh) every 100 ms. Per event, in emit order:

- *produced*: the first sample where ``sent_events`` reached it — the emitter's own queue,
  encoding and send; the harness's share, not the pipeline's (``emitter_*``);
- *stored*: the first poll where its minute held at least as many raw rows as its rank in
  that minute (broker, fetch, decode, price, write: ``produced_to_stored_*``);
- *counted*: the same in ``usage_minutes`` (the maintainer: ``stored_to_counted_*``).

``pipeline_*`` is produced → counted, what the pipeline owns; ``p50_s``/``p99_s`` stay emit →
counted, the figure earlier sessions reported. ``--split`` is accepted for old command lines
(the raw rows are always polled now).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
    parser.add_argument("--split", action="store_true", help="(always on now: kept for old command lines)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        bootstrap = broker.start()
        topic = "bench.rollup-lag"
        ensure_topics(bootstrap, {topic: PARTITIONS})
        with WorkerProcess(settings_for(Path(tmp), topic, "lag"), bootstrap_servers=bootstrap,
                           log_path=Path(tmp) / "worker.log") as worker:
            result = measure(worker.query_client(), bootstrap, topic, args.rate, args.seconds)
    print(json.dumps(result))


def emit_live(bootstrap: str, topic: str, rate: int, seconds: float, ready, go, out) -> None:
    """The emitting process: ``rate`` events a second for ``seconds``, in 10 ms ticks, ``ts`` = emit time.

    Sends back ``ticks`` (emit time, events) in order, ``sent`` samples (time, ``sent_events``) taken every
    10 ms by a thread of this process, the emitter's drops and the seconds the offering took.
    """
    base = base_events(20_000)
    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, ledger_topic=None, register_atexit=False)
    sent: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sent.append((time.time(), emitter.stats()["sent_events"]))
            time.sleep(0.01)

    ready.set()
    go.wait()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ticks: list[tuple[float, int]] = []
    per_tick = max(rate // 100, 1)
    started = time.perf_counter()
    for tick in range(int(seconds * 100)):
        while time.perf_counter() < started + tick / 100:
            time.sleep(0.0005)
        now = datetime.now(timezone.utc)
        # one copy an event (fresh ids and ts together)
        for i in range(tick * per_tick, (tick + 1) * per_tick):
            emitter.emit(base[i % len(base)].model_copy(
                update={"event_id": f"lag-{i}", "request_id": f"lag-q{i}", "ts": now}))
        ticks.append((now.timestamp(), per_tick))
    offered_s = time.perf_counter() - started
    emitter.close(120)
    stop.set()
    sampler.join()
    sent.append((time.time(), emitter.stats()["sent_events"]))
    dropped = sum(v for k, v in emitter.stats().items() if k.startswith("dropped_"))
    out.send({"ticks": ticks, "sent": sent, "dropped": dropped, "offered_s": offered_s})
    out.close()


def measure(client, bootstrap: str, topic: str, rate: int, seconds: float) -> dict:
    seen: dict[str, list[tuple[float, int]]] = {}    # minute -> (time, count) polls where the count grew
    stored: dict[str, list[tuple[float, int]]] = {}  # the same, of raw rows
    lock = threading.Lock()
    expected = [None]  # events the emitter did not drop, once it is done

    def poll() -> None:
        while True:
            rows = query_result(client, "SELECT toString(minute), sum(attempts) FROM usage_minutes FINAL "
                                        "WHERE minute >= now() - INTERVAL 30 MINUTE GROUP BY minute").rows
            now = time.time()
            raw = query_result(client, "SELECT toString(toStartOfMinute(toDateTime(ts))), count() FROM usage_events "
                                       "WHERE ts >= now() - INTERVAL 30 MINUTE AND startsWith(event_id, 'lag-') "
                                       "GROUP BY 1").rows
            raw_at = time.time()
            with lock:
                for polled, at, into in ((rows, now, seen), (raw, raw_at, stored)):
                    for minute, count in polled:
                        history = into.setdefault(minute, [])
                        if not history or int(count) > history[-1][1]:
                            history.append((at, int(count)))
                counted = sum(h[-1][1] for h in seen.values() if h)
            # every event the emitter did not drop is counted (a dropped one never arrives)
            if expected[0] is not None and counted >= expected[0]:
                return
            time.sleep(0.1)

    # Warm up: the worker has joined its groups, faust has elected it leader, and the maintainer has run.
    warm = Emitter(bootstrap_servers=bootstrap, topic=topic, ledger_topic=None, register_atexit=False)
    warm.emit(next(replay(base_events(1), 1, run="warm")).model_copy(update={"ts": datetime.now(timezone.utc)}))
    warm.close(30)
    while not query_result(client, "SELECT count() FROM usage_minutes").scalar():
        time.sleep(0.1)
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Event(), spawn.Event()
    receive, send = spawn.Pipe(duplex=False)
    emitting = spawn.Process(target=emit_live, args=(bootstrap, topic, rate, seconds, ready, go, send))
    emitting.start()
    if not ready.wait(300):
        raise RuntimeError("the emitting process did not start")
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    go.set()
    emitted = receive.recv()  # (blocks until the process has offered every event and closed its emitter)
    emitting.join()
    total = sum(n for _, n in emitted["ticks"])
    expected[0] = total - emitted["dropped"]
    poller.join(300)
    return {"load_average_1m": os.getloadavg()[0], "offered_per_s": total / emitted["offered_s"], "events": total,
            "dropped_by_emitter": emitted["dropped"]} | _stages(emitted["ticks"], emitted["sent"], stored, seen)


def _stages(ticks: list[tuple[float, int]], sent: list[tuple[float, int]], stored: dict[str, list],
            seen: dict[str, list]) -> dict:
    """Per event, in emit order: when emitted, produced, stored and counted; their percentiles per stage.

    An event's rank among all emitted gives its ``sent`` sample (the emitter sends in order); its rank within
    its minute gives its raw and rollup polls. A run whose emitter dropped events shifts the ranks among the
    sent (a dropped event is never sent): read its ``emitter_*`` as approximate (the run reports the drops)."""
    emit_at: list[float] = [t for t, n in ticks for _ in range(n)]
    produced: list[float | None] = []
    samples = iter(sent)
    current = next(samples, None)
    for k in range(1, len(emit_at) + 1):
        while current is not None and current[1] < k:
            current = next(samples, None)
        produced.append(None if current is None else current[0])
    rank: dict[str, int] = {}
    stages: dict[str, list[float]] = {name: [] for name in (
        "emit_to_counted", "emitter", "produced_to_stored", "stored_to_counted", "pipeline")}
    cursor = {"stored": {m: 0 for m in stored}, "seen": {m: 0 for m in seen}}

    def first(history: list[tuple[float, int]], which: str, minute: str, k: int) -> float | None:
        i = cursor[which].get(minute, 0)  # ranks only grow within a minute: walk each history once
        while i < len(history) and history[i][1] < k:
            i += 1
        cursor[which][minute] = i
        return history[i][0] if i < len(history) else None

    for at, made in zip(emit_at, produced, strict=True):
        minute = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:00")
        k = rank[minute] = rank.get(minute, 0) + 1
        in_raw, counted = first(stored.get(minute, []), "stored", minute, k), first(seen.get(minute, []), "seen",
                                                                                  minute, k)
        if counted is not None:
            stages["emit_to_counted"].append(counted - at)
        if made is not None:
            stages["emitter"].append(made - at)
            if counted is not None:
                stages["pipeline"].append(counted - made)
            if in_raw is not None:
                stages["produced_to_stored"].append(in_raw - made)
        if in_raw is not None and counted is not None:
            stages["stored_to_counted"].append(counted - in_raw)
    lags = stages["emit_to_counted"]
    out: dict[str, float | int] = {"counted": len(lags)}
    if lags:
        out |= {"p50_s": statistics.median(lags), "p99_s": percentile(lags, 0.99), "max_s": max(lags)}
    for name in ("emitter", "produced_to_stored", "stored_to_counted", "pipeline"):
        if stages[name]:
            out |= {f"{name}_p50_s": round(percentile(stages[name], 0.5), 3),
                    f"{name}_p99_s": round(percentile(stages[name], 0.99), 3)}
    return out


if __name__ == "__main__":
    main()
