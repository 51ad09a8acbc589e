"""OTLP trace payloads as the OpenTelemetry Collector's Kafka exporter writes them.

The exporter's ``otlp_proto`` encoding is a serialized ``TracesData`` (the same bytes
as an ``ExportTraceServiceRequest``); ``otlp_json`` is the OTLP/JSON mapping of it:
lowerCamelCase keys, trace and span ids as hex (not protobuf-JSON's base64), enums as
integers, 64-bit integers as strings or numbers. Both are read with the
``opentelemetry-proto`` messages, so a field the protocol defines is read as it defines it.

Everything here is pure: bytes in, spans (or :class:`MalformedPayload` saying why) out.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

Encoding = Literal["auto", "otlp_proto", "otlp_json"]
# OTLP/JSON carries these ids as hex; protobuf's JSON mapping reads bytes as base64.
_HEX_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class MalformedPayload(ValueError):
    """A record that is not an OTLP traces payload in the expected encoding (the message says why)."""


@dataclass(frozen=True, slots=True)
class SpanView:
    """One span with what the mapping reads: its attributes, its resource's, ids, times and status."""

    index: int                      # position in the record, resource by resource, scope by scope
    trace_id: bytes
    span_id: bytes
    name: str
    start: datetime | None
    duration_ms: float | None       # None when the span has no valid end
    status_error: bool              # span status code ERROR
    attributes: dict[str, Any]
    resource: dict[str, Any]
    source: tuple[ResourceSpans, ScopeSpans, Span]


def decode_traces(value: bytes | None, encoding: Encoding = "auto") -> TracesData:
    """The record as ``TracesData``; :class:`MalformedPayload` when it is not one.

    With ``auto``, a record starting with ``{`` is read as OTLP/JSON (a protobuf
    ``TracesData`` can never start with that byte: it would be field 15 as a group),
    anything else as protobuf.
    """
    if not value:
        raise MalformedPayload("empty record value: no OTLP payload")
    as_json = value.lstrip()[:1] == b"{" if encoding == "auto" else encoding == "otlp_json"
    if as_json:
        return _from_json(value)
    try:
        traces = TracesData.FromString(value)
    except (DecodeError, RuntimeWarning) as exc:
        raise MalformedPayload(f"not an OTLP protobuf traces payload (otlp_proto): {exc}") from None
    if not traces.resource_spans:
        # An empty TracesData is zero bytes: these bytes parsed only as fields OTLP does not have.
        raise MalformedPayload("not an OTLP protobuf traces payload (otlp_proto): no resource spans in it")
    return traces


def _from_json(value: bytes) -> TracesData:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"OTLP/JSON payload is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedPayload(f"OTLP/JSON payload is a JSON {type(doc).__name__}, expected an object")
    try:
        _hex_ids_to_base64(doc)
        # Receivers must ignore fields they do not know (OTLP/JSON), so a newer exporter still reads.
        return json_format.ParseDict(doc, TracesData(), ignore_unknown_fields=True)
    except (json_format.ParseError, MalformedPayload, TypeError, ValueError) as exc:
        raise MalformedPayload(f"not an OTLP/JSON traces payload (otlp_json): {str(exc)[:500]}") from None


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON's hex ids in place as the base64 protobuf's JSON parser reads."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key in _HEX_ID_KEYS and isinstance(child, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(child)).decode()
                except ValueError:
                    raise MalformedPayload(f"{key} {child[:40]!r} is not hex") from None
            else:
                _hex_ids_to_base64(child)
    elif isinstance(node, list):
        for child in node:
            _hex_ids_to_base64(child)


def spans(traces: TracesData) -> Iterator[SpanView]:
    """Every span of the payload, in order, with its resource's attributes."""
    index = 0
    for resource_spans in traces.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                yield SpanView(
                    index=index, trace_id=span.trace_id, span_id=span.span_id, name=span.name,
                    # nanoseconds to microseconds in integers: a float of seconds would round the last digits
                    start=_EPOCH + timedelta(microseconds=start // 1000) if start else None,
                    duration_ms=(end - start) / 1e6 if start and end >= start else None,
                    status_error=span.status.code == Status.STATUS_CODE_ERROR,
                    attributes=attributes(span.attributes), resource=resource,
                    source=(resource_spans, scope_spans, span))
                index += 1


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP key-value pairs as plain Python values (the last of a repeated key wins)."""
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def span_payload(span: SpanView) -> bytes:
    """A protobuf ``TracesData`` holding this span alone, with its resource and scope: what a dead letter
    keeps of one bad span, so that a replay to the OTLP topic submits it again, alone."""
    resource_spans, scope_spans, source = span.source
    single = TracesData()
    target = single.resource_spans.add(resource=resource_spans.resource, schema_url=resource_spans.schema_url)
    target.scope_spans.add(scope=scope_spans.scope, schema_url=scope_spans.schema_url).spans.append(source)
    return single.SerializeToString()


def hex_id(raw: bytes, *, size: int) -> str | None:
    """The id as lowercase hex when it has ``size`` bytes and is not all zeros (invalid in OTLP), else None."""
    if len(raw) != size or not any(raw):
        return None
    return binascii.hexlify(raw).decode()
