"""Throughput, latency, scaling and state size of the worker: one command, one run.

    .venv/bin/pip install -e '.[bench]'     # opentelemetry-sdk, for the emit() comparison only
    .venv/bin/python bench/throughput.py    # ~5 minutes on 2 cores; prints the table for BENCHMARKS.md

In one process tree, against one local tansu broker, on the same generated events
(the bundled Azure trace replayed with fresh ids, attribution from the demo's
seeded generator; see bench/workload.py):

1. ``emit()`` in the host thread beside OpenTelemetry's ``BatchSpanProcessor.on_end``.
2. N events are emitted through the Emitter into an 8-partition topic. Then, each
   draining that same backlog from the start:
   - the **ceiling** (bench/ceiling.py): raw aiokafka + orjson + chdb insert;
   - **spendstream** with 1 worker, then with 2 workers sharing one store host;
   - the **per-event baseline** (bench/faust_baseline.py), on the first events
     of the same replay sent one per record.
   Rate = events stored between the first rows becoming queryable and the last,
   over that time (start-up and group joins are not counted, for any of them).
   While spendstream drains, the windowed detectors (budgets, retry storms, spend
   anomalies) query the same store every 2 s (``spendstream notify`` does every 10 s).
3. **Latency**: events emitted live at a fixed offered rate (ts = emit time) to a
   running worker; the run polls ClickHouse every 50 ms and each event's latency is
   the time its 10 ms tick was first seen complete minus its ts.
4. **State size**: the worker's peak RSS after draining events spread over 1k, 100k
   and 1M distinct customers and values of a free tag (detectors off during the
   drain), then after one pass of the detectors over them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from emit_vs_otel import compare  # noqa: E402
from workload import base_events, preload, replay  # noqa: E402

from spendstream.demo.worker_process import StoreHostProcess, WorkerProcess  # noqa: E402
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.budgets import Budget, evaluate
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.emitter import Emitter  # noqa: E402
from spendstream.kafka_admin import ensure_topics  # noqa: E402
from spendstream.localbroker import LocalBroker  # noqa: E402
from spendstream.settings import Settings  # noqa: E402
from spendstream.sinks.endpoint import QueryClient  # noqa: E402
from spendstream.sinks.host import RemoteStore  # noqa: E402
from spendstream.sinks.store import query_result  # noqa: E402

PARTITIONS = 8
BENCH = Path(__file__).parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def count(client: QueryClient) -> int:
    return int(query_result(client, "SELECT count() FROM usage_events").scalar())


def drain(client: QueryClient, events: int, *, detect: bool = True, timeout_s: float = 600) -> dict[str, float]:
    """Poll until ``events`` rows are queryable; the rate from the first rows seen to the last.

    Meanwhile the windowed detectors (budgets, retry storms, spend anomalies: what
    ``spendstream notify`` runs every 10 s) run against the same store every
    ``DETECT_EVERY_S``, so their queries share the worker's CPU as they would in production.
    """
    detection = Detection(client)
    if detect:
        detection.start()
    first = None
    deadline = time.monotonic() + timeout_s
    try:
        while (stored := count(client)) < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {stored} of {events} events stored after {timeout_s} s")
            if stored and first is None:
                first = (time.perf_counter(), stored)
            time.sleep(0.1)
        now = time.perf_counter()
    finally:
        detected = detection.stop()
    first = first or (now, stored)
    # None when everything arrived in one insert (too few events to time)
    rate = (stored - first[1]) / (now - first[0]) if now > first[0] else None
    return {"events": stored, "events_per_s": rate, "seconds": now - first[0]} | detected


DETECT_EVERY_S = 2.0
BUDGETS = [Budget(name="search monthly", team="search", amount_usd=Decimal(1000)),
           Budget(name="all daily", amount_usd=Decimal(50), period="daily")]


def detect_once(client: QueryClient) -> int:
    """One pass of the windowed detectors through the worker's query endpoint; how many alerts they would
    raise. The detectors take a Store (their windows come back as Arrow): the endpoint's, as a RemoteStore."""
    store = RemoteStore(client.url, client.secret, client.timeout_s)
    now = datetime.now(timezone.utc)
    return len(evaluate(store, BUDGETS, now) + detect_retry_storms(store, now) + detect_spend_anomalies(store, now))


class Detection(threading.Thread):
    """Budgets, retry storms and spend anomalies, evaluated every ``DETECT_EVERY_S`` until stopped."""

    def __init__(self, client: QueryClient) -> None:
        super().__init__(daemon=True)
        self.client, self.passes, self.alerts, self.seconds = client, 0, 0, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.perf_counter()
            self.alerts += detect_once(self.client)
            self.passes += 1
            self.seconds += time.perf_counter() - started
            self._stop_event.wait(DETECT_EVERY_S)

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        if self.is_alive():  # never started when the detectors are off
            self.join(60)
        return {"detection_passes": self.passes, "detection_alerts": self.alerts,
                "detection_s_per_pass": self.seconds / max(self.passes, 1)}


def child(script: str, bootstrap: str, topic: str, events: int, data_dir: Path, log: Path) -> dict:
    """Run bench/<script> to completion; its line starting ``{"events"`` is its result."""
    with open(log, "wb") as err:
        out = subprocess.run([sys.executable, str(BENCH / script), bootstrap, topic, str(events), str(data_dir)],
                             stdout=subprocess.PIPE, stderr=err, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed ({out.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    # faust sends a worker's stdout to its log, so look in both
    text = out.stdout.decode() + "\n" + log.read_text(errors="replace")
    lines = [line[line.index('{"events"'):].strip() for line in text.splitlines() if '{"events"' in line]
    if not lines:
        raise RuntimeError(f"{script} printed no result; see {log}:\n{log.read_text()[-2000:]}")
    return json.loads(lines[-1])


def settings_for(root: Path, topic: str, group: str, **extra: object) -> Settings:
    return Settings(data_dir=root / "data", usage_topic=topic, consumer_group=group,
                    topic_partitions=PARTITIONS, **extra)


def one_worker(bootstrap: str, root: Path, topic: str, events: int, *, detect: bool = True,
               then: dict[str, str] | None = None) -> dict[str, float]:
    """Drain ``topic`` with one worker; ``then`` names queries to answer once it is done.

    Without ``detect`` the detectors do not run during the drain (the peak RSS is the
    worker's own), but once after it, and the peak RSS is read again.
    """
    with WorkerProcess(settings_for(root, topic, "one"), bootstrap_servers=bootstrap,
                       log_path=root / "worker.log") as worker:
        client = worker.query_client()
        result = drain(client, events, detect=detect)
        result["peak_rss_mb"] = peak_rss_mb(worker.pid)
        if not detect:
            started = time.perf_counter()
            result["detection_alerts"] = detect_once(client)
            result["detection_pass_s"] = time.perf_counter() - started
            result["peak_rss_after_detection_mb"] = peak_rss_mb(worker.pid)
        for name, sql in (then or {}).items():
            result[name] = query_result(client, sql).scalar()
    return result


def two_workers(bootstrap: str, root: Path, topic: str, events: int) -> dict[str, float]:
    with StoreHostProcess(root / "data", log_path=root / "store.log") as host:
        settings = settings_for(root, topic, "two", store_url=host.url)
        workers = [WorkerProcess(settings.model_copy(update={"data_dir": root / f"w{k}"}),
                                 bootstrap_servers=bootstrap, log_path=root / f"worker{k}.log") for k in range(2)]
        try:
            for worker in workers:
                worker.start()
            result = drain(host.query_client(timeout_s=30.0), events)
            result["peak_rss_mb"] = max(peak_rss_mb(w.pid) for w in workers)
            result["store_host_peak_rss_mb"] = peak_rss_mb(host._process.pid)
        finally:
            for worker in workers:
                worker.stop()
    return result


def baseline(bootstrap: str, root: Path, base: list, events: int) -> dict:
    """The first ``events`` of the same replay, one event per record, through a per-event faust agent."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    topic = "bench.per-event"
    ensure_topics(bootstrap, {topic: PARTITIONS})

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
        await producer.start()
        try:
            pending = [await producer.send(topic, event.model_dump_json().encode())
                       for event in replay(base, events, run="spendstream")]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(produce())
    return child("faust_baseline.py", bootstrap, topic, events, root / "data", root / "baseline.log")


def latency(bootstrap: str, root: Path, base: list, rate: int, seconds: float) -> dict[str, float]:
    """Offer ``rate`` events/s for ``seconds`` to a running worker; event time → queryable, per event."""
    topic = "bench.latency"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    with WorkerProcess(settings_for(root, topic, "latency"), bootstrap_servers=bootstrap,
                       log_path=root / "worker.log") as worker:
        client = worker.query_client()
        emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, ledger_topic=None, register_atexit=False)
        warm = next(replay(base, 1, run="warm"))
        emitter.emit(warm.model_copy(update={"ts": datetime.now(timezone.utc)}))
        emitter.flush(30)
        while count(client) < 1:  # the worker has joined its group and stored the first event
            time.sleep(0.1)

        ticks: dict[int, int] = {}   # tick time in ms -> events emitted in it
        seen: dict[int, float] = {}  # tick time in ms -> when it was first complete in ClickHouse
        lock = threading.Lock()
        done = threading.Event()

        def poll() -> None:
            while not (done.is_set() and len(seen) == len(ticks)):
                with lock:
                    pending = sorted(set(ticks) - set(seen))
                if pending:
                    rows = query_result(client, (
                        "SELECT toUnixTimestamp64Milli(ts) AS t, count() AS n FROM usage_events "
                        "WHERE ts >= fromUnixTimestamp64Milli({since:Int64}) AND event_id LIKE 'lat-%' GROUP BY t"),
                        {"since": pending[0]}).rows
                    now = time.time()
                    for t, n in rows:
                        if int(t) in ticks and int(t) not in seen and int(n) >= ticks[int(t)]:
                            seen[int(t)] = now
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        per_tick = rate // 100
        source = replay(base, rate * int(seconds) + per_tick, run="lat")
        started = time.perf_counter()
        for tick in range(int(seconds * 100)):
            while time.perf_counter() < started + tick / 100:
                time.sleep(0.0005)
            now = datetime.now(timezone.utc)
            for event in (next(source) for _ in range(per_tick)):
                emitter.emit(event.model_copy(update={"ts": now}))
            with lock:
                ticks[int(now.timestamp() * 1000)] = per_tick
        offered_s = time.perf_counter() - started
        emitter.close(60)
        done.set()
        poller.join(120)
        dropped = sum(v for k, v in emitter.stats().items() if k.startswith("dropped_"))
        latencies = [seen[t] - t / 1000 for t in ticks for _ in range(ticks[t]) if t in seen]
        return {"offered_per_s": sum(ticks.values()) / offered_s, "events": sum(ticks.values()),
                "complete_ticks": len(seen), "ticks": len(ticks), "dropped": dropped,
                "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 0.99),
                "max_s": max(latencies), "peak_rss_mb": peak_rss_mb(worker.pid)}


def state_size(bootstrap: str, root: Path, base: list, keys: int, events: int) -> dict[str, float]:
    topic = f"bench.keys{keys}"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    preload(bootstrap, topic, base, events, customers=keys, tag_values=keys, run=f"k{keys}")
    return one_worker(bootstrap, root, topic, events, detect=False, then={
        "distinct_customers": "SELECT uniqExact(customer) FROM usage_events",
        "distinct_routes_stored": "SELECT uniqExact(tags['route']) FROM usage_events",
        "folded_events": "SELECT countIf(notEmpty(folded_tags)) FROM usage_events"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--baseline-events", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--keys", default="1000,100000,1000000")
    parser.add_argument("--key-events", type=int, default=1_000_000)
    parser.add_argument("--otel-calls", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "throughput.json")
    args = parser.parse_args()

    results: dict[str, object] = {"command": " ".join(sys.argv), "started": datetime.now(timezone.utc).isoformat()}
    base = base_events(100_000)
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        bootstrap, root = broker.bootstrap_servers, Path(tmp)

        def step(name: str, fn) -> None:  # noqa: ANN001 - a zero-argument callable
            print(f"[{datetime.now():%H:%M:%S}] {name} …", flush=True)
            (root / name).mkdir()
            results[name] = fn()
            print(f"    {results[name]}", flush=True)

        samples = compare(bootstrap, args.otel_calls)
        results["emit"] = {name: {"p50_us": statistics.median(v), "p99_us": percentile(v, 0.99), "calls": len(v)}
                           for name, v in samples.items()}
        print(f"    emit() vs on_end: {results['emit']}", flush=True)

        topic = "bench.usage"
        ensure_topics(bootstrap, {topic: PARTITIONS})
        results["preload_s"] = preload(bootstrap, topic, base, args.events, run="spendstream")
        print(f"    preloaded {args.events:,} events in {results['preload_s']:.1f} s", flush=True)

        step("ceiling", lambda: child("ceiling.py", bootstrap, topic, args.events, root / "ceiling" / "data",
                                      root / "ceiling" / "ceiling.log"))
        step("spendstream_1_worker", lambda: one_worker(bootstrap, root / "spendstream_1_worker", topic,
                                                        args.events))
        step("spendstream_2_workers", lambda: two_workers(bootstrap, root / "spendstream_2_workers", topic,
                                                          args.events))
        step("faust_per_event", lambda: baseline(bootstrap, root / "faust_per_event", base, args.baseline_events))
        step("latency", lambda: latency(bootstrap, root / "latency", base, args.rate, args.latency_seconds))
        for keys in (int(k) for k in args.keys.split(",")):
            step(f"keys_{keys}", lambda keys=keys: state_size(bootstrap, root / f"keys_{keys}", base, keys,
                                                              max(args.key_events, keys)))
    results["finished"] = datetime.now(timezone.utc).isoformat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


def report(r: dict) -> str:
    one, ceiling, per_event = r["spendstream_1_worker"], r["ceiling"], r["faust_per_event"]
    two, lat, emit = r["spendstream_2_workers"], r["latency"], r["emit"]
    lines = [
        "| measure | result |", "|---|---|",
        f"| ceiling: raw aiokafka + orjson + chdb insert | {ceiling['events_per_s']:,.0f} events/s |",
        f"| per-event faust agent | {per_event['events_per_s']:,.0f} events/s |",
        f"| **spendstream, 1 worker** | **{one['events_per_s']:,.0f} events/s** "
        f"({one['events']:,} events in {one['seconds']:.1f} s) |",
        f"| spendstream ÷ ceiling | {one['events_per_s'] / ceiling['events_per_s']:.2f}× |",
        f"| spendstream ÷ per-event baseline | {one['events_per_s'] / per_event['events_per_s']:.1f}× |",
        f"| spendstream, 2 workers + store host | {two['events_per_s']:,.0f} events/s in all |",
        f"| event → queryable at {lat['offered_per_s']:,.0f} events/s offered | p50 {lat['p50_s']:.2f} s, "
        f"p99 {lat['p99_s']:.2f} s, max {lat['max_s']:.2f} s ({lat['events']:,} events, {lat['dropped']} dropped) |",
        f"| worker peak RSS (draining {one['events']:,}) | {one['peak_rss_mb']:,.0f} MB |",
        f"| `emit()` in the host thread | p50 {emit['emit']['p50_us']:.2f} µs, p99 {emit['emit']['p99_us']:.2f} µs |",
        f"| OpenTelemetry `BatchSpanProcessor.on_end` | p50 {emit['on_end']['p50_us']:.2f} µs, "
        f"p99 {emit['on_end']['p99_us']:.2f} µs |",
    ]
    for name, value in r.items():
        if name.startswith("keys_"):
            lines.append(f"| worker peak RSS, {value['distinct_customers']:,} distinct customers and tag values "
                         f"({value['events']:,} events) | {value['peak_rss_mb']:,.0f} MB draining; "
                         f"{value['peak_rss_after_detection_mb']:,.0f} MB after one detection pass "
                         f"({value['detection_pass_s']:.1f} s); {value['distinct_routes_stored']:,} tag values kept, "
                         f"{value['folded_events']:,} events folded to `__other__` |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
