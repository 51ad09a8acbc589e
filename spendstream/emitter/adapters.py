"""Build a UsageEvent from a provider's own ``usage`` object.

Providers disagree on what "input tokens" include. The contract has one meaning
(see :mod:`spendstream.schemas.usage`): ``input_tokens`` includes cached and
cache-write tokens, ``output_tokens`` includes reasoning tokens. Each adapter
accepts the SDK object or its plain-dict form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def from_openai_usage(usage: Any, *, model: str, provider: str = "openai", **fields: Any) -> UsageEvent:
    """From OpenAI's ``usage``: Chat Completions (``prompt_tokens``/``completion_tokens``)
    or the Responses API (``input_tokens``/``output_tokens``).

    OpenAI counts cached tokens inside the prompt count and reasoning tokens inside
    the completion count, which is already the contract's meaning.
    """
    if _has(usage, "prompt_tokens"):
        input_tokens = _get(usage, "prompt_tokens")
        cached = _get(usage, "prompt_tokens_details", "cached_tokens")
        output_tokens = _get(usage, "completion_tokens")
        reasoning = _get(usage, "completion_tokens_details", "reasoning_tokens")
    else:
        input_tokens = _get(usage, "input_tokens")
        cached = _get(usage, "input_tokens_details", "cached_tokens")
        output_tokens = _get(usage, "output_tokens")
        reasoning = _get(usage, "output_tokens_details", "reasoning_tokens")
    return UsageEvent(
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning,
        **fields,
    )


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
