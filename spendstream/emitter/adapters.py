"""Build a UsageEvent from a provider's response or its ``usage`` object.

Providers disagree on what "input tokens" include. The contract has one meaning
(see :mod:`spendstream.schemas.usage`): ``input_tokens`` includes cached and
cache-write tokens, ``output_tokens`` includes reasoning tokens. Each adapter
accepts the SDK object or its plain-dict form.

The ``from_*_response``/``from_anthropic_message`` adapters take the whole
response, because what is billed is not all in ``usage``: OpenAI reports the
service tier it served on the response and server-side tool calls as output
items; Anthropic reports its tier, web searches and fetches in ``usage`` but code
executions as content blocks. Keyword arguments are event fields (attribution,
``provider="azure"``, ``latency_ms``...) and win over what the response says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from spendstream.schemas._types import decimal_text
from spendstream.schemas.usage import UsageEvent


def _get(obj: Any, *path: str) -> int:
    """A count at ``path`` in a dict or SDK object; missing or null reads as 0."""
    for key in path:
        if obj is None:
            return 0
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return int(obj or 0)


def _has(obj: Any, key: str) -> bool:
    return (key in obj) if isinstance(obj, Mapping) else hasattr(obj, key)


def _at(obj: Any, *path: str) -> Any:
    """The value at ``path`` in a dict or SDK object, or None."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return obj


def _first(obj: Any, *names: str) -> Any:
    """The first of ``names`` (snake_case SDK attribute, camelCase REST key...) that ``obj`` has set."""
    return next((value for name in names if (value := _at(obj, name)) is not None), None)


def _merged(derived: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """What the response says, overridden by what the caller says (None from the response is left out)."""
    return {name: value for name, value in derived.items() if value is not None} | fields


def from_openai_usage(usage: Any, *, model: str, provider: str = "openai", **fields: Any) -> UsageEvent:
    """From OpenAI's ``usage``: Chat Completions (``prompt_tokens``/``completion_tokens``)
    or the Responses API (``input_tokens``/``output_tokens``).

    OpenAI counts cached tokens inside the prompt count and reasoning tokens inside
    the completion count, which is already the contract's meaning.
    """
    if _has(usage, "prompt_tokens"):
        input_tokens = _get(usage, "prompt_tokens")
        cached = _get(usage, "prompt_tokens_details", "cached_tokens")
        cache_write = _get(usage, "prompt_tokens_details", "cache_write_tokens")
        output_tokens = _get(usage, "completion_tokens")
        reasoning = _get(usage, "completion_tokens_details", "reasoning_tokens")
    else:
        input_tokens = _get(usage, "input_tokens")
        cached = _get(usage, "input_tokens_details", "cached_tokens")
        cache_write = _get(usage, "input_tokens_details", "cache_write_tokens")
        output_tokens = _get(usage, "output_tokens")
        reasoning = _get(usage, "output_tokens_details", "reasoning_tokens")
    return UsageEvent(
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=cache_write,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning,
        **fields,
    )


# Responses API output item types that are server-side tool calls, by the event field that counts them.
_OPENAI_TOOL_ITEMS = {"web_search_call": "web_search_calls", "file_search_call": "file_search_calls",
                      "code_interpreter_call": "code_execution_calls"}


def from_openai_response(response: Any, **fields: Any) -> UsageEvent:
    """From a whole OpenAI response: a Chat Completion or a Responses API response (object or dict).

    Adds to :func:`from_openai_usage` the ``service_tier`` OpenAI actually served
    (reported on the response, not in ``usage``: a ``flex`` or ``priority`` request
    may be served at another tier) and, for the Responses API, the server-side
    tool calls among the output items (web search, file search, code interpreter),
    and the cost a gateway reports in ``usage.cost`` (OpenRouter) as ``provider_cost_usd``.
    Raises ValueError when the response carries no usage (a stream without
    ``stream_options={"include_usage": True}``): count such calls with
    :func:`spendstream.emitter.estimate_usage` instead.
    """
    usage = _at(response, "usage")
    if usage is None:
        raise ValueError("the response has no usage (a stream without include_usage?); estimate it instead")
    derived: dict[str, Any] = {"model": _at(response, "model"), "service_tier": _at(response, "service_tier")}
    derived |= _reported_cost(usage)
    for item in _at(response, "output") or ():
        name = _OPENAI_TOOL_ITEMS.get(_at(item, "type"))
        if name is not None:
            derived[name] = derived.get(name, 0) + 1
    merged = _merged(derived, fields)
    if "model" not in merged:
        raise ValueError("the response names no model; pass model=")
    return from_openai_usage(usage, **merged)


def _reported_cost(usage: Any) -> dict[str, Any]:
    """The cost a gateway reports in an OpenAI-shaped ``usage`` (OpenRouter's ``usage.cost``, USD), as the
    contract's exact decimal text; nothing when there is none or it is not a cost the contract holds (the
    event is still metered: the computed cost stands)."""
    cost = _at(usage, "cost")
    if cost is None or isinstance(cost, bool):
        return {}
    try:
        return {"provider_cost_usd": decimal_text(cost), "provider_cost_source": "usage.cost"}
    except ValueError:
        return {}


def from_anthropic_usage(usage: Any, *, model: str, provider: str = "anthropic", **fields: Any) -> UsageEvent:
    """From Anthropic's Messages ``usage``.

    Anthropic reports ``cache_read_input_tokens`` and ``cache_creation_input_tokens``
    *beside* ``input_tokens`` (which counts only the uncached rest), so the
    contract's ``input_tokens`` is their sum. The 1-hour part of the cache writes
    (``cache_creation.ephemeral_1h_input_tokens``) is priced at its own rate.
    """
    uncached = _get(usage, "input_tokens")
    cache_read = _get(usage, "cache_read_input_tokens")
    cache_write = _get(usage, "cache_creation_input_tokens")
    return UsageEvent(
        provider=provider,
        model=model,
        input_tokens=uncached + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=_get(usage, "cache_creation", "ephemeral_1h_input_tokens"),
        output_tokens=_get(usage, "output_tokens"),
        **fields,
    )


# Anthropic's code execution tools, as server_tool_use content blocks name them.
_ANTHROPIC_CODE_TOOLS = {"code_execution", "bash_code_execution", "text_editor_code_execution"}


def from_anthropic_message(message: Any, **fields: Any) -> UsageEvent:
    """From a whole Anthropic ``Message`` (object or dict).

    Adds to :func:`from_anthropic_usage` what the message says was served:
    ``usage.service_tier`` (``batch`` becomes ``mode="batch"``: Message Batches bill
    half; ``standard`` and ``priority`` are kept as the tier), ``usage.speed ==
    "fast"`` as the ``fast`` tier, ``usage.server_tool_use`` web searches (billed per
    search) and web fetches, code executions (``server_tool_use`` content blocks
    of the code execution tools) and ``usage.inference_geo`` as the region.
    """
    usage = _at(message, "usage")
    if usage is None:
        raise ValueError("the message has no usage")
    tier = _at(usage, "service_tier")
    derived: dict[str, Any] = {
        "model": _at(message, "model"),
        "mode": "batch" if tier == "batch" else None,
        "service_tier": "fast" if _at(usage, "speed") == "fast" else (None if tier == "batch" else tier),
        "web_search_calls": _get(usage, "server_tool_use", "web_search_requests"),
        "web_fetch_calls": _get(usage, "server_tool_use", "web_fetch_requests"),
        "code_execution_calls": sum(1 for block in _at(message, "content") or ()
                                    if _at(block, "type") == "server_tool_use"
                                    and _at(block, "name") in _ANTHROPIC_CODE_TOOLS),
        "region": _at(usage, "inference_geo"),
    }
    merged = _merged(derived, fields)
    if "model" not in merged:
        raise ValueError("the message names no model; pass model=")
    return from_anthropic_usage(usage, **merged)


def from_gemini_usage(usage: Any, *, model: str, provider: str = "google", **fields: Any) -> UsageEvent:
    """From Gemini's ``usage_metadata`` (``usageMetadata`` in REST JSON).

    ``promptTokenCount`` already includes ``cachedContentTokenCount``; tool-use
    prompt tokens are billed as input too. ``candidatesTokenCount`` does *not*
    include ``thoughtsTokenCount``, which is billed as output: the contract's
    ``output_tokens`` is their sum, with the thoughts as ``reasoning_tokens``.
    """
    def count(snake: str) -> int:
        camel = snake.split("_")[0] + "".join(part.title() for part in snake.split("_")[1:])
        return _get(usage, snake) or _get(usage, camel)

    thoughts = count("thoughts_token_count")
    return UsageEvent(
        provider=provider,
        model=model,
        input_tokens=count("prompt_token_count") + count("tool_use_prompt_token_count"),
        cached_input_tokens=count("cached_content_token_count"),
        output_tokens=count("candidates_token_count") + thoughts,
        reasoning_tokens=thoughts,
        **fields,
    )


def from_gemini_response(response: Any, **fields: Any) -> UsageEvent:
    """From a whole Gemini ``GenerateContentResponse`` (google-genai object or REST JSON).

    Adds to :func:`from_gemini_usage` the model version that served the call and
    the web searches grounding ran (``groundingMetadata.webSearchQueries`` of each
    candidate: Google bills grounding with Google Search per query). Vertex AI's
    ``trafficType`` other than on-demand (``PROVISIONED_THROUGHPUT``) is kept as the
    service tier: such calls are not billed per token.
    """
    usage = _first(response, "usage_metadata", "usageMetadata")
    if usage is None:
        raise ValueError("the response has no usage_metadata")
    searches = 0
    for candidate in _at(response, "candidates") or ():
        grounding = _first(candidate, "grounding_metadata", "groundingMetadata")
        searches += len(_first(grounding, "web_search_queries", "webSearchQueries") or ())
    traffic = _first(usage, "traffic_type", "trafficType")
    traffic = str(getattr(traffic, "value", traffic)).lower() if traffic is not None else None
    derived = {"model": _first(response, "model_version", "modelVersion"), "web_search_calls": searches,
               "service_tier": None if traffic in (None, "on_demand", "traffic_type_unspecified") else traffic}
    merged = _merged(derived, fields)
    if "model" not in merged:
        raise ValueError("the response names no model version; pass model=")
    return from_gemini_usage(usage, **merged)


def from_bedrock_converse_usage(usage: Any, *, model: str, provider: str = "bedrock", **fields: Any) -> UsageEvent:
    """From the Bedrock Converse API's ``usage`` (``inputTokens``, ``outputTokens``, …).

    Like Anthropic's own API, Converse reports ``cacheReadInputTokens`` and
    ``cacheWriteInputTokens`` *beside* ``inputTokens``; the contract's input is the sum.
    """
    cache_read = _get(usage, "cacheReadInputTokens")
    cache_write = _get(usage, "cacheWriteInputTokens")
    return UsageEvent(
        provider=provider,
        model=model,
        input_tokens=_get(usage, "inputTokens") + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=_get(usage, "outputTokens"),
        **fields,
    )


# ``arn:aws:bedrock:<region>:<account>:inference-profile/<profile>`` and foundation-model ARNs.
_BEDROCK_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:(?P<region>[\w-]*):\d*:(?P<kind>[\w-]+)/(?P<id>.+)$")
# System-defined cross-region inference profiles prefix the model id with their geography.
_BEDROCK_GEOS = ("us.", "eu.", "apac.", "jp.", "au.", "ca.", "us-gov.", "in.", "global.")


def from_bedrock_converse_response(response: Any, *, model: str, region: str | None = None,
                                   **fields: Any) -> UsageEvent:
    """From a whole Bedrock Converse response (boto3's dict); ``model`` is the ``modelId`` called.

    Converse does not echo the model, so the caller passes the ``modelId`` it sent,
    and ``region`` as the client's (``client.meta.region_name``). An inference
    profile, as an id with a geography prefix (``us.``, ``eu.``, ``global.``...) or as
    an ARN, is kept as ``inference_profile``; an ARN's region wins over ``region``.
    Also reads ``metrics.latencyMs`` and the ``serviceTier`` served, where reported.
    """
    profile = None
    if match := _BEDROCK_ARN.match(model):
        region = match["region"] or region
        profile = model if match["kind"] != "foundation-model" else None
    elif model.startswith(_BEDROCK_GEOS):
        profile = model
    latency = _at(response, "metrics", "latencyMs")
    derived = {"region": region, "inference_profile": profile, "service_tier": _at(response, "serviceTier", "type"),
               "latency_ms": float(latency) if latency is not None else None}
    usage = _at(response, "usage")
    if usage is None:
        raise ValueError("the response has no usage")
    return from_bedrock_converse_usage(usage, model=model, **_merged(derived, fields))


def from_otel_genai_attributes(attributes: Mapping[str, Any], **fields: Any) -> UsageEvent:
    """From a span's OpenTelemetry GenAI semantic-convention attributes.

    ``gen_ai.usage.input_tokens`` includes ``gen_ai.usage.cache_read.input_tokens``
    and ``gen_ai.usage.cache_creation.input_tokens`` (as the conventions say it
    should); provider and model come from ``gen_ai.provider.name`` (or the older
    ``gen_ai.system``) and ``gen_ai.response.model`` (else ``gen_ai.request.model``).
    """
    def count(*names: str) -> int:
        return next((int(attributes[n]) for n in names if attributes.get(n) is not None), 0)

    provider = attributes.get("gen_ai.provider.name") or attributes.get("gen_ai.system")
    model = attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model")
    if not provider or not model:
        raise ValueError("span has no gen_ai.provider.name/gen_ai.system or no gen_ai.request.model/response.model")
    return UsageEvent(
        provider=str(provider),
        model=str(model),
        input_tokens=count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        cached_input_tokens=count("gen_ai.usage.cache_read.input_tokens"),
        cache_write_tokens=count("gen_ai.usage.cache_creation.input_tokens"),
        output_tokens=count("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        reasoning_tokens=count("gen_ai.usage.reasoning.output_tokens"),
        **fields,
    )
