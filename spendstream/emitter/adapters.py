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
    contract's ``input_tokens`` is their sum. The 5-minute/1-hour split of cache
    writes, when present, is kept in tags for the pricing engine.
    """
    uncached = _get(usage, "input_tokens")
    cache_read = _get(usage, "cache_read_input_tokens")
    cache_write = _get(usage, "cache_creation_input_tokens")
    tags = dict(fields.pop("tags", None) or {})
    write_1h = _get(usage, "cache_creation", "ephemeral_1h_input_tokens")
    if write_1h:
        tags["cache_write_1h_tokens"] = str(write_1h)
    return UsageEvent(
        provider=provider,
        model=model,
        input_tokens=uncached + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=_get(usage, "output_tokens"),
        tags=tags,
        **fields,
    )
