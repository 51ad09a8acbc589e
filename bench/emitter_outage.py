"""emit() while the broker is down: host-thread latency, buffering up to the bound, drops counted.

    .venv/bin/python bench/emitter_outage.py [--outage-s 60] [--bound 20000] [--rate 1000]
        [--event-bytes 10000] [--max-buffer-mb 32]

A local tansu broker; the host thread emits at --rate events/s, first with the
broker up, then for --outage-s with it stopped, then the broker comes back (same
port; tansu keeps nothing, so the topic is made again) and the emitter drains.
Latency is the p50/p99 of each emit() call; "sustained p99" is the median of the
p99s of each 2,000 calls (one GIL switch does not make a p99).

--event-bytes pads each event with an extra field to about that many bytes of JSON
(events are made as they are emitted, so the process holds only what the emitter
keeps): the growth of the process's resident memory over the outage is what the
buffer cost.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import time
import uuid
from collections.abc import Iterable, Iterator

from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import LocalBroker
from spendstream.schemas import UsageEvent


def _events(prefix: str, n: int, pad_bytes: int = 0) -> Iterator[UsageEvent]:
    for i in range(n):
        padding = {"detail": f"{i:x}".ljust(pad_bytes, "x")} if pad_bytes else {}  # a string of its own per event
        yield UsageEvent(event_id=f"{prefix}-{i}", provider="openai", model="gpt-4o-mini", input_tokens=1_000 + i,
                         output_tokens=50, **padding)


def _rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _emit(emitter: Emitter, events: Iterable[UsageEvent], rate: float, seconds: float | None) -> list[float]:
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
    parser.add_argument("--event-bytes", type=int, default=0, help="pad outage events to about this size")
    parser.add_argument("--max-buffer-mb", type=float, default=None, help="max_buffer_bytes (default: the emitter's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    topic = f"outage.{uuid.uuid4().hex[:8]}"
    broker = LocalBroker()
    bootstrap = broker.start()
    ensure_topics(bootstrap, {topic: 1})
    buffer = {"max_buffer_bytes": int(args.max_buffer_mb * 1024 * 1024)} if args.max_buffer_mb else {}
    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, max_queue_events=args.bound, register_atexit=False,
                      **buffer)
    normal = _emit(emitter, _events("up", 30_000), args.rate, 20.0)
    emitter.flush(60)
    broker.stop()
    gc.collect()
    rss_before = _rss_mb()
    pad = max(args.event_bytes - 630, 0)  # a padded event travels as a JSON object: ~630 bytes without the pad
    during = _emit(emitter, _events("down", int(args.outage_s * args.rate) + 1, pad), args.rate, args.outage_s)
    rss_growth, held = _rss_mb() - rss_before, emitter.stats()
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
    buffered = f", emitter buffered {held['buffered_bytes'] / 1e6:.1f} MB encoded" if "buffered_bytes" in held else ""
    print(f"end of outage: process memory +{rss_growth:.0f} MB{buffered} "
          f"({held['enqueued'] - len(normal):,} events accepted during it)")


if __name__ == "__main__":
    main()
