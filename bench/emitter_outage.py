"""emit() while the broker is down: host-thread latency, buffering up to the bound, drops counted.

    .venv/bin/python bench/emitter_outage.py [--outage-s 60] [--bound 20000] [--rate 1000]

A local tansu broker; the host thread emits at --rate events/s, first with the
broker up, then for --outage-s with it stopped, then the broker comes back (same
port; tansu keeps nothing, so the topic is made again) and the emitter drains.
Latency is the p50/p99 of each emit() call; "sustained p99" is the median of the
p99s of each 2,000 calls (one GIL switch does not make a p99).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid

from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import LocalBroker
from spendstream.schemas import UsageEvent


def _events(prefix: str, n: int) -> list[UsageEvent]:
    return [UsageEvent(event_id=f"{prefix}-{i}", provider="openai", model="gpt-4o-mini", input_tokens=1_000 + i,
                       output_tokens=50) for i in range(n)]


def _emit(emitter: Emitter, events: list[UsageEvent], rate: float, seconds: float | None) -> list[float]:
    out, began = [], time.monotonic()
    for n, event in enumerate(events, 1):
        if seconds is not None and time.monotonic() - began > seconds:
            break
        t0 = time.perf_counter_ns()
        emitter.emit(event)
        out.append((time.perf_counter_ns() - t0) / 1000)
        ahead = n / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)
    return out


def _summary(samples: list[float]) -> str:
    chunks = [samples[i:i + 2_000] for i in range(0, len(samples) - 1_999, 2_000)]
    sustained = statistics.median(statistics.quantiles(c, n=100)[98] for c in chunks)
    return (f"p50 {statistics.median(samples):.2f} µs, p99 {statistics.quantiles(samples, n=100)[98]:.2f} µs, "
            f"sustained p99 {sustained:.2f} µs ({len(samples):,} calls)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--bound", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1_000.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    topic = f"outage.{uuid.uuid4().hex[:8]}"
    broker = LocalBroker()
    bootstrap = broker.start()
    ensure_topics(bootstrap, {topic: 1})
    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, max_queue_events=args.bound, register_atexit=False)
    normal = _emit(emitter, _events("up", 30_000), args.rate, 20.0)
    emitter.flush(60)
    broker.stop()
    during = _emit(emitter, _events("down", int(args.outage_s * args.rate) + 1), args.rate, args.outage_s)
    back = time.monotonic()
    broker.start()
    ensure_topics(bootstrap, {topic: 1})
    emitter.flush(300)
    drained_s = time.monotonic() - back
    stats = emitter.stats()
    emitter.close()
    broker.stop()
    delivered = stats["sent_events"] - len(normal)
    print(f"broker up:   emit() {_summary(normal)}")
    print(f"broker down: emit() {_summary(during)}")
    print(f"during the {args.outage_s:.0f} s outage: {len(during):,} emits, bound {args.bound:,}: "
          f"{delivered:,} delivered after recovery (drained in {drained_s:.1f} s), "
          f"{stats['dropped_queue_full']:,} dropped as queue_full, {stats['dropped_send_failed']} as send_failed")


if __name__ == "__main__":
    main()
