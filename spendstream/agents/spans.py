"""The OTLP stage: OpenTelemetry GenAI spans from the Collector's Kafka exporter, as usage events.

    records ──decode_traces──▶ spans ──model calls──▶ usage items ──validate──▶ UsageEvents ──price──▶ BatchResult
                 │                  └── others: skipped, counted        │
                 └──── DeadLetters (a record that is not OTLP; a span that cannot be an event) ┘

After this stage the events are the same columns as the usage topic's, priced and
written by the same writer, and their offsets committed by the same loop (write, then commit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from spendstream.agents.attribution import TagGuard
from spendstream.agents.stages import price_events, validate
from spendstream.batches import WHOLE_RECORD, BatchResult, DeadLetter, SourceRecord
from spendstream.ingest.genai import Attribution, SpanRefused, skip_reason, usage_item
from spendstream.ingest.otlp import Encoding, MalformedPayload, decode_traces, span_payload, spans
from spendstream.pricing.engine import Pricer
from spendstream.schemas.usage import UsageEvent


def process_spans(records: Sequence[SourceRecord], pricer: Pricer, tag_guard: TagGuard | None = None, *,
                  attribution: Attribution | None = None, encoding: Encoding = "auto") -> BatchResult:
    """Every model-call span of the records as a priced usage event; other spans counted in ``skipped``.

    A record that is not an OTLP traces payload is one dead letter (its bytes as they
    came); a model-call span that cannot be a valid event is one dead letter whose raw
    bytes are an OTLP payload of that span alone, so a replay to the topic retries it alone.
    """
    attribution = attribution or Attribution()
    result = BatchResult()
    skipped: Counter[str] = Counter()
    exact: list[UsageEvent] = []
    exact_sources: list[SourceRecord] = []
    for record in records:
        try:
            traces = decode_traces(record.value, encoding)
        except MalformedPayload as exc:
            result.dead_letters.append(DeadLetter(record, WHOLE_RECORD, str(exc), record.value or b""))
            continue
        items: list[tuple[int, Any]] = []
        payloads: dict[int, bytes] = {}
        for span in spans(traces):
            if (why := skip_reason(span)) is not None:
                skipped[why] += 1
                continue
            payloads[span.index] = span_payload(span)
            try:
                items.append((span.index, usage_item(span, attribution)))
            except SpanRefused as exc:
                result.dead_letters.append(DeadLetter(record, span.index, str(exc), payloads[span.index]))
        events, dead = validate(record, items)
        result.dead_letters.extend(replace(d, raw=payloads[d.item_index]) for d in dead)
        exact.extend(events)
        exact_sources.extend([record] * len(events))
    result.skipped = dict(skipped)
    return price_events(result, [], [], [], exact, exact_sources, pricer, tag_guard)
