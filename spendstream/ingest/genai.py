"""OpenTelemetry GenAI spans as UsageEvents: which spans are model calls, and what each attribute means.

Attribute names are those of the GenAI semantic conventions (open-telemetry/
semantic-conventions-genai, ``model/gen-ai/registry.yaml``), then the older names
and the aliases OpenLLMetry (traceloop) and OpenLIT write, in that order of preference:

=====================  ======================================================================
UsageEvent field        span attributes, first found wins
=====================  ======================================================================
provider                gen_ai.provider.name, gen_ai.system (older)
model                   gen_ai.response.model (what served), gen_ai.request.model
input_tokens            gen_ai.usage.input_tokens, gen_ai.usage.prompt_tokens (older, OpenLLMetry)
output_tokens           gen_ai.usage.output_tokens, gen_ai.usage.completion_tokens
cached_input_tokens     gen_ai.usage.cache_read.input_tokens, gen_ai.usage.cache_read_input_tokens
cache_write_tokens      gen_ai.usage.cache_creation.input_tokens, gen_ai.usage.cache_creation_input_tokens
reasoning_tokens        gen_ai.usage.reasoning.output_tokens, gen_ai.usage.reasoning_tokens (OpenLLMetry, OpenLIT)
max_tokens              gen_ai.request.max_tokens
ttft_ms                 gen_ai.response.time_to_first_chunk (seconds)
service_tier            openai.response.service_tier, gen_ai.openai.response.service_tier, gen_ai.response.service_tier
http_status             http.response.status_code, else error.type when it is a status code
=====================  ======================================================================

The event id is ``otel-<trace id>-<span id>`` (a span exported twice is stored once),
``ts`` the span's start, ``latency_ms`` its duration, ``status`` from the span status
and ``error.type``. Attribution comes from span attributes, then resource attributes,
through :class:`Attribution`. Nothing here guesses a value that is not there: a
model call without a provider or model is refused with the reason, not filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spendstream.ingest.otlp import SpanView, hex_id

# gen_ai.operation.name values (or OpenLLMetry's llm.request.type) other than these are model calls
# (chat, generate_content, text_completion, embeddings, and the like). These are operations around
# model calls: their usage, where they carry any, is their child spans' (counting it again would bill
# one call twice). OpenLIT's framework/vectordb/agent spans are of this kind too.
NOT_MODEL_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "plan", "retrieval",
                             "framework", "vectordb", "agent", "execute_task"})

# What the conventions call a provider → the name spendstream's catalog knows it by (pricing/normalize.py).
PROVIDERS = {
    "aws.bedrock": "bedrock", "azure.ai.openai": "azure", "az.ai.openai": "azure", "gcp.vertex_ai": "vertex_ai",
    "gcp.gemini": "gemini", "gcp.gen_ai": "google", "vertex_ai": "vertex_ai", "mistral_ai": "mistral",
    "x_ai": "xai",
}

_FIELDS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cached_input_tokens": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens"),
    "max_tokens": ("gen_ai.request.max_tokens",),
}
_SERVICE_TIER = ("openai.response.service_tier", "gen_ai.openai.response.service_tier", "gen_ai.response.service_tier")

# Where attribution comes from unless configured (SPENDSTREAM_OTLP_ATTRIBUTION): each key is looked
# up in the span's attributes, then its resource's; the first key found wins.
DEFAULT_ATTRIBUTION: dict[str, tuple[str, ...]] = {
    "team": ("spendstream.team", "traceloop.association.properties.team"),
    "feature": ("spendstream.feature", "traceloop.association.properties.feature"),
    "customer": ("spendstream.customer", "traceloop.association.properties.customer"),
    "environment": ("spendstream.environment", "deployment.environment.name", "deployment.environment",
                    "gen_ai.environment"),
    "service": ("spendstream.service", "service.name", "gen_ai.application_name"),
    "deployment": ("spendstream.deployment",),
}
# Span or resource attributes `spendstream.tag.<key>` become free tags `<key>`.
TAG_PREFIX = "spendstream.tag."


class SpanRefused(ValueError):
    """A model-call span that cannot become a UsageEvent (the message says why)."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which attributes give team, feature, customer, environment, service and deployment.

    ``keys`` replaces the default list of the fields it names; the others keep theirs.
    """

    keys: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keys) - set(DEFAULT_ATTRIBUTION))
        if unknown:
            raise ValueError(f"attribution for unknown field(s) {', '.join(unknown)}; the fields are "
                             f"{', '.join(DEFAULT_ATTRIBUTION)}")

    def lookup(self, span: SpanView) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, default in DEFAULT_ATTRIBUTION.items():
            for key in self.keys.get(name, default):
                value = span.attributes.get(key, span.resource.get(key))
                if value is not None and value != "":
                    found[name] = str(value)
                    break
        return found


def operation(attributes: Mapping[str, Any]) -> str | None:
    """The span's GenAI operation (``gen_ai.operation.name``, else OpenLLMetry's ``llm.request.type``)."""
    value = attributes.get("gen_ai.operation.name") or attributes.get("llm.request.type")
    return str(value) if value else None


def skip_reason(span: SpanView) -> str | None:
    """Why this span is not a model call (``not_genai``, ``not_a_model_call``), or None when it is one."""
    attributes = span.attributes
    op = operation(attributes)
    if op is None and not any(key in attributes for key in ("gen_ai.provider.name", "gen_ai.system",
                                                            "gen_ai.request.model", "gen_ai.response.model")):
        return "not_genai"
    if op in NOT_MODEL_CALLS:
        return "not_a_model_call"
    return None


def usage_item(span: SpanView, attribution: Attribution) -> dict[str, Any]:
    """The UsageEvent (as its JSON fields) of a model-call span; :class:`SpanRefused` when it cannot be one.

    Values are passed on as the span gave them where they are not what the contract
    takes (a token count as text, say), so validation refuses them with its own reason.
    """
    attributes = span.attributes
    trace, span_id = hex_id(span.trace_id, size=16), hex_id(span.span_id, size=8)
    if trace is None or span_id is None:
        raise SpanRefused("span has no valid trace id and span id (16 and 8 bytes, not all zero): its event_id "
                          "is made from them")
    if span.start is None:
        raise SpanRefused("span has no start time (ts is the span's start)")
    provider = _first(attributes, ("gen_ai.provider.name", "gen_ai.system"))
    model = _first(attributes, ("gen_ai.response.model", "gen_ai.request.model"))
    what = f"GenAI span (operation {operation(attributes) or 'not given'})"
    if provider is None:
        raise SpanRefused(f"{what} names no provider (gen_ai.provider.name or gen_ai.system)")
    if model is None:
        raise SpanRefused(f"{what} names no model (gen_ai.response.model or gen_ai.request.model)")
    item: dict[str, Any] = {"event_id": f"otel-{trace}-{span_id}", "ts": span.start.isoformat(),
                            "provider": PROVIDERS.get(str(provider), str(provider)), "model": str(model)}
    for name, keys in _FIELDS.items():
        value = _first(attributes, keys)
        if value is not None:
            item[name] = _count(value)
    _totals_include_parts(item)
    if span.duration_ms is not None:
        item["latency_ms"] = span.duration_ms
    ttft_s = attributes.get("gen_ai.response.time_to_first_chunk")
    if isinstance(ttft_s, (int, float)) and not isinstance(ttft_s, bool) and ttft_s >= 0:
        item["ttft_ms"] = ttft_s * 1000.0
    if (tier := _first(attributes, _SERVICE_TIER)) is not None:
        item["service_tier"] = str(tier)
    item.update(_status(span))
    item.update(attribution.lookup(span))
    tags = {key[len(TAG_PREFIX):]: str(value) for source in (span.resource, attributes)
            for key, value in source.items() if key.startswith(TAG_PREFIX) and value is not None}
    if tags:
        item["tags"] = tags
    return item


def _first(attributes: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((attributes[key] for key in keys if attributes.get(key) not in (None, "")), None)


def _count(value: Any) -> Any:
    """An integral double (some SDKs record counts as doubles) as an int; anything else as given."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _totals_include_parts(item: dict[str, Any]) -> None:
    """Make the totals include their parts where a span's totals plainly do not.

    The conventions say ``input_tokens`` includes cache reads and writes and
    ``output_tokens`` includes reasoning; Anthropic's and Gemini's own usage objects
    count them beside the total, and some instrumentations copy those numbers as they
    are. Where the parts exceed the total, the total cannot have included them: add them.
    """
    counts = {name: item.get(name, 0) for name in ("input_tokens", "cached_input_tokens", "cache_write_tokens",
                                                   "output_tokens", "reasoning_tokens")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        return  # validation refuses the wrong type with its own reason
    parts = counts["cached_input_tokens"] + counts["cache_write_tokens"]
    if parts > counts["input_tokens"]:
        item["input_tokens"] = counts["input_tokens"] + parts
    if counts["reasoning_tokens"] > counts["output_tokens"]:
        item["output_tokens"] = counts["output_tokens"] + counts["reasoning_tokens"]


def _status(span: SpanView) -> dict[str, Any]:
    attributes = span.attributes
    error_type = attributes.get("error.type")
    http_status = attributes.get("http.response.status_code")
    if http_status is None and isinstance(error_type, str) and error_type.isdigit() and len(error_type) == 3:
        http_status = int(error_type)  # the conventions give error.type as the status code for HTTP errors
    fields: dict[str, Any] = {}
    if isinstance(http_status, int) and not isinstance(http_status, bool) and 100 <= http_status <= 599:
        fields["http_status"] = http_status
    failed = span.status_error or bool(error_type) or fields.get("http_status", 0) >= 400
    if not failed:
        return {**fields, "status": "ok"}
    kind = str(error_type or "").lower().replace("_", "").replace(".", "")
    if fields.get("http_status") == 429 or "ratelimit" in kind:
        return {**fields, "status": "rate_limited"}
    if fields.get("http_status") in (408, 504) or "timeout" in kind:
        return {**fields, "status": "timeout"}
    return {**fields, "status": "error"}
