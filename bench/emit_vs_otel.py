"""emit() in the host thread, side by side with OpenTelemetry's BatchSpanProcessor.on_end, in one run.

    .venv/bin/pip install 'spendstream[bench]'      # opentelemetry-sdk, for this comparison only
    .venv/bin/python bench/emit_vs_otel.py [--calls 200000]

Both hand a finished record to a background exporter through a bounded queue;
both exporters send to a local endpoint that accepts everything (tansu for the
emitter; a no-op exporter for OpenTelemetry, so its network cost is not counted —
which favours it). The span carries the same attributes as the usage event
(OpenTelemetry GenAI names). Calls are paced in bursts of 1,000 so neither queue
is ever full.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import LocalBroker
from spendstream.schemas import UsageEvent


class NoopExporter(SpanExporter):
    def export(self, spans):  # noqa: ANN001 - OpenTelemetry's signature
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _stats(samples: list[float]) -> str:
    return (f"p50 {statistics.median(samples):.2f} µs, p99 {statistics.quantiles(samples, n=100)[98]:.2f} µs "
            f"({len(samples):,} calls)")


def compare(bootstrap: str, calls: int) -> dict[str, list[float]]:
    """Per-call µs of ``Emitter.emit()`` and of ``BatchSpanProcessor.on_end()``, interleaved in one run."""
    events = [UsageEvent(provider="openai", model="gpt-4o-mini", input_tokens=1_200 + i % 500, output_tokens=300,
                         cached_input_tokens=512, team="search", feature="summarise", customer=f"c{i % 40}",
                         request_id=f"r{i}") for i in range(calls)]
    provider = TracerProvider()
    processor = BatchSpanProcessor(NoopExporter(), max_queue_size=2_048 * 16)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    spans = []
    for i in range(calls):
        span = tracer.start_span("chat gpt-4o-mini", attributes={
            "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1_200 + i % 500, "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 512, "team": "search", "feature": "summarise",
            "customer": f"c{i % 40}"})
        span.end()  # ended here: on_end below is timed on its own
        spans.append(span)

    topic = f"bench.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {topic: 1})
    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, max_queue_events=calls + 1, register_atexit=False)
    emitter.emit(events[0])
    emitter.flush(30)
    emit_us, on_end_us = [], []
    gc.disable()
    try:
        for start in range(0, calls, 1_000):  # interleaved bursts: the same machine state for both
            for event in events[start:start + 1_000]:
                t0 = time.perf_counter_ns()
                emitter.emit(event)
                emit_us.append((time.perf_counter_ns() - t0) / 1000)
            for span in spans[start:start + 1_000]:
                t0 = time.perf_counter_ns()
                processor.on_end(span)
                on_end_us.append((time.perf_counter_ns() - t0) / 1000)
            time.sleep(0.02)
    finally:
        gc.enable()
        emitter.close(60)
        processor.shutdown()
    return {"emit": emit_us, "on_end": on_end_us}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    with LocalBroker() as broker:
        samples = compare(broker.start(), args.calls)
    print(f"spendstream Emitter.emit():               {_stats(samples['emit'])}")
    print(f"OpenTelemetry BatchSpanProcessor.on_end(): {_stats(samples['on_end'])}")


if __name__ == "__main__":
    main()
