"""OTLP trace payloads made by the OpenTelemetry SDK and its own OTLP encoder, in both Kafka exporter encodings."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode


@dataclass
class SpanSpec:
    name: str
    attributes: dict[str, Any]
    start_ns: int
    duration_ns: int = 250_000_000
    error: bool = False
    children: list[SpanSpec] = field(default_factory=list)


def finished_spans(specs: Sequence[SpanSpec], *, resource: dict[str, Any]) -> list[ReadableSpan]:
    """Spans recorded by the SDK (a span's children are started inside it), as an exporter receives them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("spendstream-tests")

    def record(spec: SpanSpec) -> None:
        span = tracer.start_span(spec.name, attributes=spec.attributes, start_time=spec.start_ns)
        if spec.children:
            from opentelemetry import trace

            with trace.use_span(span, end_on_exit=False):
                for child in spec.children:
                    record(child)
        if spec.error:
            span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end(end_time=spec.start_ns + spec.duration_ns)

    for spec in specs:
        record(spec)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def otlp_proto(spans: Sequence[ReadableSpan]) -> bytes:
    """The Kafka exporter's ``otlp_proto`` encoding: the serialized ExportTraceServiceRequest/TracesData."""
    return encode_spans(spans).SerializeToString()


def otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    """The ``otlp_json`` encoding: protobuf's JSON mapping with OTLP/JSON's rules (hex ids, integer enums)."""
    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)

    def hex_ids(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hex_ids(value)
        elif isinstance(node, list):
            for value in node:
                hex_ids(value)

    hex_ids(doc)
    return orjson.dumps(doc)


def event_id(span: ReadableSpan) -> str:
    return f"otel-{span.context.trace_id:032x}-{span.context.span_id:016x}"
